"""Schemathesis authentication for scripts/api-conformance.

Every operation gets a token of the run's own admin client (from
FLOTILLA_ST_URL, FLOTILLA_ST_CLIENT_ID and FLOTILLA_ST_CLIENT_SECRET),
fetched again after any 401. `DELETE /v3/access_token` revokes the token it
is called with, so it gets a fresh token of its own each time: the run's
token stays valid and every other operation keeps being tested for real.
"""

import json
import os
import urllib.request

import schemathesis

REVOKE = {"method": "DELETE", "path": "/v3/access_token"}


def issue_token() -> str:
    """A new access token of the run's client (client credentials)."""
    body = json.dumps(
        {
            "grant_type": "client_credentials",
            "client_id": os.environ["FLOTILLA_ST_CLIENT_ID"],
            "client_secret": os.environ["FLOTILLA_ST_CLIENT_SECRET"],
        }
    ).encode()
    request = urllib.request.Request(
        os.environ["FLOTILLA_ST_URL"] + "/v3/access_token",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)["access_token"]


def bearer(case, token: str) -> None:
    case.headers = case.headers or {}
    case.headers["Authorization"] = f"Bearer {token}"


@schemathesis.auth(refresh_interval=None).apply_to(**REVOKE)
class DisposableToken:
    """A token made for one revocation."""

    def get(self, case, ctx):
        return issue_token()

    def set(self, case, data, ctx):
        bearer(case, data)


@schemathesis.auth(refresh_interval=120).skip_for(**REVOKE)
class RunToken:
    """The run's token, cached and fetched again after a 401."""

    def get(self, case, ctx):
        return issue_token()

    def set(self, case, data, ctx):
        bearer(case, data)
