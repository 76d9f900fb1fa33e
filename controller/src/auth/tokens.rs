//! Issuing and checking access tokens.

use super::{secret, AuthError};
use crate::clock;
use crate::quotas::Quotas;
use crate::store::{Principal, StackStatus, Store, TokenRecord};
use std::time::Duration;

/// A token as handed to its owner.
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: u64,
}

/// Exchanges client credentials for a principal. `client_id` may name an API
/// client, or a stack (with the stack's `auth_token` as secret), which is how
/// VM agents authenticate without operator credentials.
pub fn check_credentials(
    store: &Store,
    client_id: &str,
    client_secret: &str,
) -> Result<Principal, AuthError> {
    if let Some(client) = store.client(client_id)? {
        if client.revoked_ms.is_some()
            || !secret::matches_digest(client_secret, &client.secret_sha256)
        {
            return Err(AuthError::BadCredentials);
        }
        return Ok(Principal::Client {
            client_id: client.client_id,
            user_id: client.user_id,
            username: client.username,
            admin: client.admin,
        });
    }
    if let Some(stack) = store.stack(client_id)? {
        if stack.stack_status != StackStatus::DeleteComplete
            && secret::equal(client_secret, &stack.auth_token)
        {
            return Ok(Principal::Stack {
                stack_id: stack.stack_id,
            });
        }
    }
    // Spend the same hashing work as a real check so unknown ids do not
    // answer faster than wrong secrets.
    let _ = secret::matches_digest(client_secret, "");
    Err(AuthError::BadCredentials)
}

/// Issues a token for `principal`, valid for `ttl`. When the credential
/// then holds more active tokens than its quota allows (see
/// [`crate::quotas`]), the oldest lapse: issuing never fails on a quota.
pub fn issue(
    store: &Store,
    principal: Principal,
    ttl: Duration,
    quotas: &Quotas,
) -> Result<IssuedToken, AuthError> {
    let now = clock::now_ms();
    let cap = token_cap(store, &principal, quotas)?;
    let active = store.active_tokens_of(&principal, now)?;
    let lapse = crate::quotas::tokens_to_lapse(active.len(), cap);
    for digest in active.iter().take(lapse) {
        store.revoke_token(digest, now)?;
    }
    if lapse > 0 {
        tracing::info!(
            lapsed = lapse,
            cap,
            "oldest tokens of the credential lapsed (token quota)"
        );
    }
    let access_token = flotilla_common::ids::random_alphanumeric(secret::ACCESS_TOKEN_LEN);
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    store.insert_token(
        &secret::digest(&access_token),
        &TokenRecord {
            principal,
            issued_ms: now,
            expires_ms: now.saturating_add(ttl_ms),
            revoked_ms: None,
        },
    )?;
    Ok(IssuedToken {
        access_token,
        expires_in: ttl.as_secs(),
    })
}

/// How many active tokens `principal`'s credential may hold: a client's
/// flat cap, or a multiple of its stack's instances.
fn token_cap(store: &Store, principal: &Principal, quotas: &Quotas) -> Result<usize, AuthError> {
    match principal {
        Principal::Client { .. } => Ok(quotas.tokens_per_client),
        Principal::Stack { stack_id } => {
            let instances = match store.stack(stack_id)? {
                Some(stack) => store
                    .version_by_seq(stack_id, stack.latest_seq)?
                    .and_then(|version| serde_json::from_str(&version.body).ok())
                    .and_then(|body| crate::template::instance_count(&body, None))
                    .unwrap_or(0),
                None => 0,
            };
            Ok(crate::quotas::stack_token_cap(quotas, instances))
        }
    }
}

/// The token inside an `Authorization` header value: `Bearer <token>` (the
/// scheme is case-insensitive, as RFC 6750 allows).
pub fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let header = header.ok_or(AuthError::Missing)?;
    let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

/// Resolves a presented token to its principal, re-checking that the client
/// or stack behind it is still valid.
pub fn authenticate(store: &Store, token: &str) -> Result<Principal, AuthError> {
    authenticate_digest(store, &secret::digest(token))
}

/// [`authenticate`] for a token known by its digest: what a long-lived
/// response (an event stream) re-checks while it runs, so revoking the
/// token or its client ends it.
pub fn authenticate_digest(store: &Store, digest: &str) -> Result<Principal, AuthError> {
    let record = store.token(digest)?.ok_or(AuthError::Unknown)?;
    if record.revoked_ms.is_some() {
        return Err(AuthError::Revoked);
    }
    if record.expires_ms <= clock::now_ms() {
        return Err(AuthError::Expired);
    }
    match &record.principal {
        Principal::Client { client_id, .. } => {
            let valid = store
                .client(client_id)?
                .is_some_and(|client| client.revoked_ms.is_none());
            if !valid {
                return Err(AuthError::ClientRevoked);
            }
        }
        Principal::Stack { stack_id } => {
            let valid = store
                .stack(stack_id)?
                .is_some_and(|stack| stack.stack_status != StackStatus::DeleteComplete);
            if !valid {
                return Err(AuthError::StackGone);
            }
        }
    }
    Ok(record.principal)
}

/// Like [`authenticate`], and also accepts a stack's own `auth_token` as
/// the bearer (for the agent endpoints, so a VM needs no operator
/// credentials and no token exchange).
pub fn authenticate_agent(store: &Store, token: &str) -> Result<Principal, AuthError> {
    match authenticate(store, token) {
        Err(AuthError::Unknown) => {
            let stack_id = store
                .stack_by_token(&secret::digest(token))?
                .ok_or(AuthError::Unknown)?;
            let live = store
                .stack(&stack_id)?
                .is_some_and(|stack| stack.stack_status != StackStatus::DeleteComplete);
            if live {
                Ok(Principal::Stack { stack_id })
            } else {
                Err(AuthError::StackGone)
            }
        }
        other => other,
    }
}

/// Revokes a presented token (logout). Returns whether it was known.
pub fn revoke(store: &Store, token: &str) -> Result<bool, AuthError> {
    Ok(store.revoke_token(&secret::digest(token), clock::now_ms())?)
}
