//! Who is calling: the `Authorization` header resolved to a principal, and
//! the ownership rules that follow from it.

use super::error::ApiError;
use super::state::AppState;
use crate::auth::{secret, tokens, AuthError};
use crate::store::{Principal, StackRecord};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

/// An authenticated caller.
pub struct Caller(pub Principal);

/// An operator (API client) caller; stack tokens are refused.
pub struct Operator {
    pub user_id: String,
    pub username: String,
    pub admin: bool,
}

/// The raw `Authorization` header value, for endpoints that also take a
/// stack's `auth_token` directly.
pub struct RawAuthorization(pub Option<String>);

fn header(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = tokens::bearer(header(parts))?;
        let principal = tokens::authenticate(&state.store, token)?;
        Ok(Caller(principal))
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await?.0 {
            Principal::Client {
                user_id,
                username,
                admin,
                ..
            } => Ok(Operator {
                user_id,
                username,
                admin,
            }),
            Principal::Stack { .. } => Err(ApiError::forbidden(
                "a stack's token can only call the agent endpoints; use operator client credentials",
            )),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RawAuthorization {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Ok(RawAuthorization(header(parts).map(str::to_owned)))
    }
}

impl Operator {
    /// Whether this operator may see `stack` (its owner, or an admin).
    pub fn owns(&self, stack: &StackRecord) -> bool {
        self.admin || stack.user_id == self.user_id
    }
}

impl Caller {
    /// Whether this caller may act on `stack`: its owner, an admin, or the
    /// stack's own token.
    pub fn may_use(&self, stack: &StackRecord) -> bool {
        match &self.0 {
            Principal::Client { user_id, admin, .. } => *admin || *user_id == stack.user_id,
            Principal::Stack { stack_id } => *stack_id == stack.stack_id,
        }
    }
}

/// Authorizes a call from a VM agent for `stack`: an access token of the
/// owner, an admin or the stack, or the stack's `auth_token` itself as the
/// bearer, so a VM needs no operator credentials.
pub fn authorize_agent(
    state: &AppState,
    header: Option<&str>,
    stack: &StackRecord,
) -> Result<(), ApiError> {
    let presented = tokens::bearer(header)?;
    if secret::equal(presented, &stack.auth_token) {
        return Ok(());
    }
    match tokens::authenticate(&state.store, presented).map(Caller) {
        Ok(caller) if caller.may_use(stack) => Ok(()),
        Ok(_) => Err(ApiError::forbidden(format!(
            "this token may not report for stack {}",
            stack.stack_id
        ))),
        Err(AuthError::Unknown) => Err(ApiError::unauthorized(
            "unknown token: send an access token or this stack's auth_token",
        )),
        Err(err) => Err(err.into()),
    }
}
