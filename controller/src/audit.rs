//! The audit trail (Akkeris audits): every operator action is recorded with
//! who did it, when and what it changed, as an event of type `audit`, so
//! the event list, the stream and webhooks carry it as they carry every
//! event, and `GET /v3/audits` lists them. What changed names keys, ids
//! and counts, never a secret: config changes list the variables' names,
//! never their values; clients and tokens their ids, never their secrets.

use crate::stacks::Actor;
use crate::store::{EventRecord, Store, StoreError, StoreResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The event type every audit entry is recorded as.
pub const KIND: &str = "audit";

/// What an operator did. One name per action, so `?action=` filters by
/// it and a webhook receiver can switch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Action {
    #[serde(rename = "stack.apply")]
    StackApply,
    #[serde(rename = "stack.update")]
    StackUpdate,
    #[serde(rename = "stack.formation")]
    StackFormation,
    #[serde(rename = "stack.config")]
    StackConfig,
    #[serde(rename = "stack.rollback")]
    StackRollback,
    #[serde(rename = "stack.delete")]
    StackDelete,
    #[serde(rename = "stack.restart")]
    StackRestart,
    #[serde(rename = "stack.stop")]
    StackStop,
    #[serde(rename = "stack.start")]
    StackStart,
    #[serde(rename = "instance.restart")]
    InstanceRestart,
    #[serde(rename = "instance.stop")]
    InstanceStop,
    #[serde(rename = "instance.start")]
    InstanceStart,
    #[serde(rename = "agent.drain")]
    AgentDrain,
    #[serde(rename = "agent.undrain")]
    AgentUndrain,
    #[serde(rename = "agent.revoke")]
    AgentRevoke,
    #[serde(rename = "client.create")]
    ClientCreate,
    #[serde(rename = "client.revoke")]
    ClientRevoke,
    #[serde(rename = "join_token.create")]
    JoinTokenCreate,
    #[serde(rename = "join_token.revoke")]
    JoinTokenRevoke,
    #[serde(rename = "pool.create")]
    PoolCreate,
    #[serde(rename = "pool.update")]
    PoolUpdate,
    #[serde(rename = "pool.delete")]
    PoolDelete,
    #[serde(rename = "hook.create")]
    HookCreate,
    #[serde(rename = "hook.remove")]
    HookRemove,
}

impl Action {
    /// Every action, for documents and checks.
    pub const ALL: [Action; 24] = [
        Action::StackApply,
        Action::StackUpdate,
        Action::StackFormation,
        Action::StackConfig,
        Action::StackRollback,
        Action::StackDelete,
        Action::StackRestart,
        Action::StackStop,
        Action::StackStart,
        Action::InstanceRestart,
        Action::InstanceStop,
        Action::InstanceStart,
        Action::AgentDrain,
        Action::AgentUndrain,
        Action::AgentRevoke,
        Action::ClientCreate,
        Action::ClientRevoke,
        Action::JoinTokenCreate,
        Action::JoinTokenRevoke,
        Action::PoolCreate,
        Action::PoolUpdate,
        Action::PoolDelete,
        Action::HookCreate,
        Action::HookRemove,
    ];

    /// The name recorded and filtered on (`stack.update`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::StackApply => "stack.apply",
            Action::StackUpdate => "stack.update",
            Action::StackFormation => "stack.formation",
            Action::StackConfig => "stack.config",
            Action::StackRollback => "stack.rollback",
            Action::StackDelete => "stack.delete",
            Action::StackRestart => "stack.restart",
            Action::StackStop => "stack.stop",
            Action::StackStart => "stack.start",
            Action::InstanceRestart => "instance.restart",
            Action::InstanceStop => "instance.stop",
            Action::InstanceStart => "instance.start",
            Action::AgentDrain => "agent.drain",
            Action::AgentUndrain => "agent.undrain",
            Action::AgentRevoke => "agent.revoke",
            Action::ClientCreate => "client.create",
            Action::ClientRevoke => "client.revoke",
            Action::JoinTokenCreate => "join_token.create",
            Action::JoinTokenRevoke => "join_token.revoke",
            Action::PoolCreate => "pool.create",
            Action::PoolUpdate => "pool.update",
            Action::PoolDelete => "pool.delete",
            Action::HookCreate => "hook.create",
            Action::HookRemove => "hook.remove",
        }
    }
}

/// The data of an `audit` event: who did what to which thing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entry {
    pub action: Action,
    /// The operator's user name.
    pub username: String,
    /// The API client whose token made the call.
    pub client_id: String,
    /// What was acted on: a stack, agent, client, join token, pool or
    /// hook id (or name).
    pub target: String,
    /// What changed: keys, ids and counts, never a secret value.
    #[schema(value_type = Object)]
    pub changes: Value,
}

/// An operator's action about to be recorded.
pub struct Record<'a> {
    pub action: Action,
    pub target: &'a str,
    /// The stack it concerns, so its owner sees it.
    pub stack_id: Option<&'a str>,
    pub instance_id: Option<&'a str>,
    pub changes: Value,
}

/// Appends the audit event of `record` done by `actor` at `now_ms`. The
/// caller flushes with the action's own writes, before it answers.
pub fn append(
    store: &Store,
    actor: Actor<'_>,
    record: Record<'_>,
    now_ms: i64,
) -> StoreResult<EventRecord> {
    let entry = Entry {
        action: record.action,
        username: actor.username.to_owned(),
        client_id: actor.client_id.to_owned(),
        target: record.target.to_owned(),
        changes: record.changes,
    };
    tracing::info!(
        action = entry.action.as_str(),
        username = %entry.username,
        client_id = %entry.client_id,
        target = %entry.target,
        "audit"
    );
    let data = serde_json::to_value(&entry).map_err(|source| StoreError::Encode {
        tree: "events",
        source,
    })?;
    store.record(
        &crate::events::Event::Audit(data),
        record.stack_id,
        record.instance_id,
        now_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_one_name_and_round_trips() {
        let mut names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        for action in Action::ALL {
            let json = serde_json::to_value(action).expect("encodes");
            assert_eq!(json, Value::from(action.as_str()));
            let back: Action = serde_json::from_value(json).expect("decodes");
            assert_eq!(back, action);
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Action::ALL.len(), "names are unique");
    }
}
