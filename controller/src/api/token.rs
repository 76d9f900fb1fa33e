//! `POST /v3/access_token`: OAuth client credentials, as in Mobingi; and
//! `DELETE /v3/access_token` to revoke the token presented.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{JsonOrForm, Peer};
use super::state::AppState;
use crate::auth::tokens;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Token request (JSON or form-encoded). Fields are optional here so a
/// missing one gets the OAuth error `invalid_request`, not a parse error;
/// the document says they are required, which is what the handler checks.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// Always `client_credentials`.
    #[schema(value_type = GrantType, required = true)]
    pub grant_type: Option<String>,
    /// An API client id, or a stack id (then the secret is its `auth_token`).
    #[schema(value_type = String, required = true)]
    pub client_id: Option<String>,
    #[schema(value_type = String, required = true)]
    pub client_secret: Option<String>,
}

/// The one grant type served (anything else is `unsupported_grant_type`).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum GrantType {
    ClientCredentials,
}

/// An issued token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
    pub access_token: String,
}

/// Exchanges client credentials for an access token.
#[utoipa::path(post, path = "/v3/access_token", tag = "auth",
    request_body(content(
        (TokenRequest = "application/json"),
        (TokenRequest = "application/x-www-form-urlencoded"),
    ), description = "JSON, or form-encoded as the alm-agent sends it"),
    responses(
        (status = 200, description = "Token issued", body = TokenResponse),
        (status = 400, description = "Missing field, malformed body or `unsupported_grant_type`", body = ErrorBody),
        (status = 401, description = "Wrong client credentials (`invalid_client`)", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Neither JSON nor form-encoded", body = ErrorBody),
        (status = 429, description = "Too many requests from this address (`rate_limited`), or too many failed secrets for this client id from this address (`too_many_attempts`); see `Retry-After`", body = ErrorBody),
    ))]
pub async fn issue(
    State(state): State<AppState>,
    Peer(peer): Peer,
    JsonOrForm(request): JsonOrForm<TokenRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let grant_type = request
        .grant_type
        .ok_or_else(|| ApiError::bad_request("invalid_request", "grant_type is required"))?;
    if grant_type != "client_credentials" {
        return Err(ApiError::bad_request(
            "unsupported_grant_type",
            format!("grant_type {grant_type:?} is not supported; use client_credentials"),
        ));
    }
    let (Some(client_id), Some(client_secret)) = (request.client_id, request.client_secret) else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "client_id and client_secret are required",
        ));
    };
    let now = crate::clock::now_ms();
    let tried = state
        .lockouts
        .begin(&client_id, peer, now)
        .map_err(|refusal| refuse_try(&state, &client_id, peer, refusal, now))?;
    let principal = match tokens::check_credentials(&state.store, &client_id, &client_secret) {
        Ok(principal) => {
            state.lockouts.succeeded(tried);
            principal
        }
        Err(err) => {
            let policy = state.lockouts.policy();
            if tried.locks(policy) {
                state.fleet.metrics.secret_lockouts.inc();
                tracing::warn!(
                    client_id = %shown(&client_id),
                    %peer,
                    failures = tried.count(),
                    lock_secs = policy.lock_for.as_secs(),
                    "client id locked out from this address after failed secrets"
                );
            } else {
                tracing::warn!(
                    client_id = %shown(&client_id),
                    %peer,
                    failures = tried.count(),
                    "token refused: bad credentials"
                );
            }
            return Err(err.into());
        }
    };
    let issued = tokens::issue(
        &state.store,
        principal,
        state.settings.token_ttl,
        &state.settings.quotas,
    )?;
    state.store.flush().await?;
    tracing::info!(client_id = %client_id, "token issued");
    Ok(Json(TokenResponse {
        token_type: "Bearer".into(),
        expires_in: issued.expires_in,
        access_token: issued.access_token,
    }))
}

/// A client id as logs show it: ids are the caller's text, so long ones
/// are cut.
fn shown(client_id: &str) -> &str {
    let end = client_id
        .char_indices()
        .nth(64)
        .map_or(client_id.len(), |(at, _)| at);
    &client_id[..end]
}

/// The 429 for a pair that must wait, counted (and logged at debug).
fn refuse_try(
    state: &AppState,
    client_id: &str,
    peer: std::net::IpAddr,
    refusal: crate::auth::lockout::Refusal,
    now_ms: i64,
) -> ApiError {
    let outcome = if refusal.locked { "locked" } else { "slowed" };
    state
        .fleet
        .metrics
        .secret_tries_refused
        .get_or_create(&crate::metrics::OutcomeLabels {
            outcome: outcome.into(),
        })
        .inc();
    let retry_after = refusal.retry_after_secs(now_ms);
    // The lock itself was logged as a warning; each refused try only at
    // debug (the metric counts them), so a flood cannot flood the log.
    tracing::debug!(
        client_id = %shown(client_id),
        %peer,
        outcome,
        retry_after,
        "token request refused unchecked after failed secrets"
    );
    let message = if refusal.locked {
        format!("too many failed secrets for this client id from this address; locked for {retry_after} s")
    } else {
        format!("too many failed secrets for this client id from this address; retry after {retry_after} s")
    };
    ApiError::too_many("too_many_attempts", message, retry_after).context(
        serde_json::json!({ "client_id": shown(client_id), "locked": refusal.locked, "retry_after": retry_after }),
    )
}

/// Revokes the access token presented in `Authorization` (log out).
#[utoipa::path(delete, path = "/v3/access_token", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Token revoked"),
        (status = 401, description = "Missing, unknown, expired or revoked token", body = ErrorBody),
    ))]
pub async fn revoke(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<StatusCode> {
    let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let token = tokens::bearer(header)?;
    tokens::authenticate(&state.store, token)?;
    tokens::revoke(&state.store, token)?;
    state.store.flush().await?;
    Ok(StatusCode::NO_CONTENT)
}
