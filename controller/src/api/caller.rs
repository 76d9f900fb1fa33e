//! Who is calling: the `Authorization` header resolved to a principal, and
//! the ownership rules that follow from it.

use super::error::ApiError;
use super::state::AppState;
use crate::auth::tokens;
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
    /// The API client the token was issued to (what owns the hooks it makes).
    pub client_id: String,
    /// The digest of the presented token, so long-lived responses (event
    /// streams) can re-check that it still holds.
    pub token_digest: String,
}

/// A caller of the agent endpoints: an access token, or a stack's own
/// `auth_token` presented as the bearer.
pub struct AgentCaller(pub Caller);

/// A caller of the spot-notice endpoint: an enrolled agent with its own
/// REST token (handed over the fleet link), or any [`AgentCaller`].
pub enum NoticeCaller {
    /// The agent whose current REST token was presented.
    Agent(Box<crate::store::AgentRecord>),
    Other(AgentCaller),
}

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
        let token = tokens::bearer(header(parts))?;
        match tokens::authenticate(&state.store, token)? {
            Principal::Client {
                client_id,
                user_id,
                username,
                admin,
            } => Ok(Operator {
                user_id,
                username,
                admin,
                client_id,
                token_digest: crate::auth::secret::digest(token),
            }),
            Principal::Stack { .. } => Err(ApiError::forbidden(
                "a stack's token can only call the agent endpoints; use operator client credentials",
            )),
        }
    }
}

impl FromRequestParts<AppState> for AgentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = tokens::bearer(header(parts))?;
        let principal = tokens::authenticate_agent(&state.store, token)?;
        Ok(AgentCaller(Caller(principal)))
    }
}

impl FromRequestParts<AppState> for NoticeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = tokens::bearer(header(parts))?;
        if let Some(agent) = crate::auth::agent_tokens::authenticate(&state.store, token)? {
            return Ok(NoticeCaller::Agent(Box::new(agent)));
        }
        let principal = tokens::authenticate_agent(&state.store, token)?;
        Ok(NoticeCaller::Other(AgentCaller(Caller(principal))))
    }
}

impl AgentCaller {
    /// Who this caller is, for the report rules.
    pub fn reporter(&self) -> super::report_rules::Reporter {
        use super::report_rules::Reporter;
        match &self.0 .0 {
            Principal::Client { admin: true, .. } => Reporter::Admin,
            Principal::Client { .. } => Reporter::Owner,
            Principal::Stack { .. } => Reporter::Stack,
        }
    }
}

impl Operator {
    /// Refuses (403) unless this operator is an admin; `what` names the
    /// action in the message.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("{what} needs an admin client")))
        }
    }

    /// This operator as the actor of a stack operation.
    pub fn actor(&self) -> crate::stacks::Actor<'_> {
        crate::stacks::Actor {
            user_id: &self.user_id,
            username: &self.username,
            admin: self.admin,
            client_id: &self.client_id,
        }
    }

    /// The stacks whose events this operator may list: `None` (all) for
    /// an admin, else their own.
    pub fn visible_stacks(
        &self,
        store: &crate::store::Store,
    ) -> crate::store::StoreResult<Option<Vec<String>>> {
        if self.admin {
            return Ok(None);
        }
        Ok(Some(
            store
                .stacks()?
                .into_iter()
                .filter(|stack| self.owns(stack))
                .map(|stack| stack.stack_id)
                .collect(),
        ))
    }

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
