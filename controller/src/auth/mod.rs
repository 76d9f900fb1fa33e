//! Credentials: API clients, access tokens, and the checks every request
//! goes through.
//!
//! Secrets and tokens are stored only as SHA-256 digests and compared in
//! constant time; the plain values exist in memory just long enough to hand
//! them to their owner once.

pub mod agent_tokens;
pub mod clients;
pub mod lockout;
pub mod secret;
pub mod tokens;

use crate::store::StoreError;

/// Why a request could not be authenticated. The messages are safe to show
/// to the caller: they never contain the presented secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing Authorization header; send `Authorization: Bearer <access_token>`")]
    Missing,
    #[error("malformed Authorization header; expected `Bearer <access_token>`")]
    Malformed,
    #[error("unknown access token")]
    Unknown,
    #[error("access token expired; request a new one at POST /v3/access_token")]
    Expired,
    #[error("access token revoked")]
    Revoked,
    #[error("the client this token was issued to has been revoked")]
    ClientRevoked,
    #[error("the stack this token was issued for no longer exists")]
    StackGone,
    #[error("invalid client credentials")]
    BadCredentials,
    #[error(transparent)]
    Store(#[from] StoreError),
}
