#!/usr/bin/env python3
"""A Flotilla webhook receiver: checks X-Flotilla-Signature-256, refuses
deliveries signed more than 5 minutes from now (replays of captured
requests) and delivery ids it has already taken, then prints the event.

    FLOTILLA_HOOK_SECRET=... webhook-receiver.py --port 8000
    webhook-receiver.py --port 8000 --secret-file /run/secrets/hook

With --secret-file the secret is read at each request, so a new one takes
effect without a restart. Standard library only.
"""

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

TOLERANCE = 300  # seconds
SEEN = {}  # delivery id -> when it was taken


def verify(secret: bytes, header: str, body: bytes, now: float) -> str:
    """Returns "" when the delivery is genuine and fresh, else why not."""
    fields = [part.split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [v for k, v in fields if k.strip() == "t" and v.isdigit()]
    signatures = [v for k, v in fields if k.strip() == "v1"]
    if len(stamps) != 1 or not signatures:
        return "malformed signature"
    expected = hmac.new(secret, stamps[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        return "bad signature"
    if abs(now - int(stamps[0])) > TOLERANCE:
        return "stale timestamp"
    return ""


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        now = time.time()
        why = verify(self.server.secret(), self.headers.get("X-Flotilla-Signature-256", ""), body, now)
        delivery = self.headers.get("X-Flotilla-Delivery", "")
        # An id taken over twice the tolerance ago cannot pass the time check again.
        for old in [d for d, at in SEEN.items() if now - at > 2 * TOLERANCE]:
            del SEEN[old]
        if not why and delivery in SEEN:
            why = "delivery already taken"
        if why:
            self.send_response(409 if why == "delivery already taken" else 400)
            self.end_headers()
            self.wfile.write(why.encode())
            return
        SEEN[delivery] = now
        event = json.loads(body)
        print(json.dumps({"delivery": delivery, "type": event.get("type")}), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--secret-file")
    args = parser.parse_args()
    server = HTTPServer((args.host, args.port), Handler)
    if args.secret_file:
        server.secret = lambda: open(args.secret_file, "rb").read().strip()
    else:
        secret = os.environ["FLOTILLA_HOOK_SECRET"].encode()
        server.secret = lambda: secret
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
