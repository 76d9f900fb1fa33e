//! Each enrolled agent's own REST token: what Flotilla's agent presents on
//! `POST /v3/event/spot/shutdown` while its fleet link is down, instead of a
//! stack's token (which would let it, or anyone holding that token, speak
//! for other VMs). Handed over the link at every session; only its digest
//! is stored, bound to the agent, and a new session's token replaces it.

use super::secret;
use crate::store::{AgentRecord, AgentState, Store, StoreResult};

/// Length of an agent's REST token.
pub const AGENT_TOKEN_LEN: usize = 48;

/// Makes a new REST token for `agent_id` (the previous one stops working)
/// and returns it, for the welcome of its session.
pub fn rotate(store: &Store, agent_id: &str) -> StoreResult<String> {
    let token = flotilla_common::ids::random_alphanumeric(AGENT_TOKEN_LEN);
    store.rotate_agent_token(agent_id, &secret::digest(&token))?;
    Ok(token)
}

/// The live (not revoked) agent whose current REST token this is.
pub fn authenticate(store: &Store, token: &str) -> StoreResult<Option<AgentRecord>> {
    let Some(agent_id) = store.agent_by_token(&secret::digest(token))? else {
        return Ok(None);
    };
    Ok(store
        .agent(&agent_id)?
        .filter(|agent| agent.state != AgentState::Revoked))
}
