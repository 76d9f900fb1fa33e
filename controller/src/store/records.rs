//! The records the store keeps. They are the controller's model: the API
//! layer turns them into the Mobingi response shapes.

use serde::{Deserialize, Serialize};

/// A person or team that owns clients, stacks and templates.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: String,
    pub username: String,
    pub created_ms: i64,
}

/// API credentials (OAuth client credentials). The secret is kept only as a
/// SHA-256 digest: secrets are 30 random characters, so a plain digest is
/// enough to make a stolen database useless for logging in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    pub secret_sha256: String,
    pub user_id: String,
    pub username: String,
    pub admin: bool,
    pub created_ms: i64,
    #[serde(default)]
    pub revoked_ms: Option<i64>,
}

/// Who a token (or request) acts for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Principal {
    /// An operator's API client.
    Client {
        client_id: String,
        user_id: String,
        username: String,
        admin: bool,
    },
    /// A VM agent holding a stack's own `auth_token`: may only read that
    /// stack's container config and report events for it.
    Stack { stack_id: String },
}

/// An issued access token, keyed by the SHA-256 of the token itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    pub principal: Principal,
    pub issued_ms: i64,
    pub expires_ms: i64,
    #[serde(default)]
    pub revoked_ms: Option<i64>,
}

/// The Mobingi stack statuses.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StackStatus {
    CreateInProgress,
    CreateComplete,
    CreateFailed,
    UpdateInProgress,
    UpdateComplete,
    UpdateFailed,
    DeleteInProgress,
    DeleteComplete,
    DeleteFailed,
}

impl StackStatus {
    /// Whether the stack is being, or has been, deleted: such a stack takes
    /// no more updates.
    pub fn is_deleting(self) -> bool {
        matches!(
            self,
            Self::DeleteInProgress | Self::DeleteComplete | Self::DeleteFailed
        )
    }

    /// Created or updated, and every instance ran.
    pub fn is_complete(self) -> bool {
        matches!(self, Self::CreateComplete | Self::UpdateComplete)
    }
}

/// A stack: what applying a template created. `stack_id` equals the
/// template id, as in Mobingi.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StackRecord {
    pub stack_id: String,
    pub user_id: String,
    pub username: String,
    pub nickname: String,
    /// Handed to the stack's VMs so they can call the agent endpoints without
    /// operator credentials. Shown to the owner in describe, so kept as is.
    pub auth_token: String,
    pub create_time_ms: i64,
    pub stack_status: StackStatus,
    #[serde(default)]
    pub status_reason: Option<String>,
    /// The `vendor` section of the first version; updates cannot change it.
    #[serde(default)]
    pub vendor: Option<serde_json::Value>,
    /// Number of the newest version (versions are numbered from 1).
    pub latest_seq: u64,
    pub latest_version_id: String,
    pub updated_ms: i64,
    /// Stopped by its operator (`POST .../stop`): every container stays
    /// stopped, new versions included, until `POST .../start`.
    #[serde(default)]
    pub stopped: bool,
}

/// One immutable template version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionRecord {
    pub stack_id: String,
    pub seq: u64,
    pub version_id: String,
    pub created_ms: i64,
    /// The body exactly as stored (compact JSON), so `size` is its length.
    pub body: String,
    /// The pool each configuration (by flag) runs in, resolved when the
    /// version was stored. Versions stored before pools existed have none:
    /// their configurations run in [`DEFAULT_POOL`].
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pools: std::collections::BTreeMap<String, String>,
}

impl VersionRecord {
    /// The pool a configuration of this version runs in.
    pub fn pool_of(&self, flag: &str) -> &str {
        self.pools.get(flag).map_or(DEFAULT_POOL, String::as_str)
    }
}

/// The built-in pool: every agent enrolled without naming a pool, and
/// every configuration stored before pools existed.
pub const DEFAULT_POOL: &str = "default";

fn default_pool() -> String {
    DEFAULT_POOL.to_owned()
}

/// A pool of agents shared by a team: who may place stacks on them, and
/// what the containers there may ask of the host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PoolRecord {
    pub name: String,
    /// Usernames that may place stacks in the pool and create its join
    /// tokens (admins always may).
    pub users: Vec<String>,
    pub policy: flotilla_common::policy::Policy,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// Something that happened, as recorded for operators and fleet tooling.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct EventRecord {
    /// Monotonic, so clients can resume after the last one they saw.
    pub id: u64,
    /// RFC 3339 with milliseconds.
    pub time: String,
    /// `spot.shutdown`, `container.status`, `stack.created`, ...
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// Type-specific details.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// The last status an instance reported for a stack's container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct InstanceStatusRecord {
    pub stack_id: String,
    pub instance_id: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RFC 3339 with milliseconds.
    pub updated: String,
    /// `http` for the REST event endpoint, `quic` for the fleet link.
    pub source: String,
    /// The template version the container runs (fleet link reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// The reporting agent (fleet link reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The git commit the container serves (code deploys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// A configuration an agent is pinned to at enrollment (as alm-agent runs
/// one stack's flag per VM).
#[derive(
    Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, utoipa::ToSchema,
)]
pub struct Pin {
    pub stack_id: String,
    pub flag: String,
}

/// An agent's connection state as the controller sees it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Enrolled, never connected yet.
    Enrolled,
    Connected,
    /// Silent for longer than the lost timeout, or disconnected.
    Lost,
    /// Its certificate was revoked; it may not connect.
    Revoked,
}

/// An enrolled agent (one VM).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentRecord {
    pub agent_id: String,
    /// Bound at enrollment; the agent cannot change it later.
    pub instance_id: String,
    pub hostname: String,
    /// `sha256:...` of the client certificate issued to it.
    pub cert_fingerprint: String,
    pub enrolled_ms: i64,
    #[serde(default)]
    pub pin: Option<Pin>,
    /// The pool it was enrolled into, for life.
    #[serde(default = "default_pool")]
    pub pool: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    pub state: AgentState,
    /// When the state last changed.
    pub state_since_ms: i64,
    #[serde(default)]
    pub last_seen_ms: Option<i64>,
    #[serde(default)]
    pub facts: Option<flotilla_common::wire::messages::HostFacts>,
    /// The newest desired-state generation the agent has acknowledged.
    #[serde(default)]
    pub acked_generation: u64,
    /// The highest lifecycle report id applied (each is applied once).
    #[serde(default)]
    pub lifecycle_id: u64,
    /// Set while the agent is being drained (a cloud notice or an operator).
    #[serde(default)]
    pub drain: Option<DrainRecord>,
    /// When the cloud last recommended moving work off this VM (AWS
    /// rebalance): new work goes elsewhere first.
    #[serde(default)]
    pub at_risk_ms: Option<i64>,
}

#[cfg(test)]
impl AgentRecord {
    /// A connected agent in the default pool, for tests.
    pub(crate) fn for_test(agent_id: &str) -> Self {
        AgentRecord {
            agent_id: agent_id.into(),
            instance_id: format!("i-{agent_id}"),
            hostname: "h".into(),
            cert_fingerprint: format!("sha256:{agent_id}"),
            enrolled_ms: 0,
            pin: None,
            pool: DEFAULT_POOL.to_owned(),
            labels: Default::default(),
            state: AgentState::Connected,
            state_since_ms: 0,
            last_seen_ms: None,
            facts: None,
            acked_generation: 0,
            lifecycle_id: 0,
            drain: None,
            at_risk_ms: None,
        }
    }
}

/// Why an agent is drained.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DrainReason {
    /// The cloud is terminating (or stopping, preempting) the VM.
    Spot,
    /// The cloud recommended a rebalance and the controller drains on it.
    Rebalance,
    /// An operator asked for it.
    Operator,
}

/// A drain in progress or done: the agent takes no new placements, its
/// placements are started elsewhere, and each is released from it once its
/// replacement runs (or at the deadline).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DrainRecord {
    pub reason: DrainReason,
    /// The cloud's notice: cloud and action (`terminate`, `preempt`, ...).
    #[serde(default)]
    pub cloud: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
    /// When the VM goes (or when an operator's drain stops waiting for
    /// replacements), ms since the epoch.
    #[serde(default)]
    pub deadline_ms: Option<i64>,
    pub since_ms: i64,
    /// The lifecycle report id of the notice, so the same notice arriving
    /// over REST and then over the link is recorded once.
    #[serde(default)]
    pub notice_id: Option<u64>,
    /// When every container was stopped.
    #[serde(default)]
    pub drained_ms: Option<i64>,
}

/// A join token: lets a VM enroll, a limited number of times, until it
/// expires. Only the digest of the token is kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinTokenRecord {
    /// Public id, for listing and revoking (`jt-...`).
    pub id: String,
    pub token_sha256: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub max_uses: u32,
    pub uses: u32,
    #[serde(default)]
    pub pin: Option<Pin>,
    /// The pool its agents join.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// May enroll an instance id that a live agent holds, replacing that
    /// agent's identity (only admins can make such tokens).
    #[serde(default)]
    pub replace: bool,
    /// The user who created it.
    pub user_id: String,
    #[serde(default)]
    pub revoked_ms: Option<i64>,
}

/// One placement in an agent's desired state, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlacementRecord {
    pub stack_id: String,
    pub flag: String,
    pub version_id: String,
    pub spec_json: String,
    /// The pool it runs in and that pool's policy, so a policy change is
    /// a new desired state the agent enforces.
    #[serde(default)]
    pub pool: String,
    #[serde(default)]
    pub policy: flotilla_common::policy::Policy,
    /// See [`flotilla_common::wire::messages::Placement::scoped_volumes`].
    #[serde(default)]
    pub scoped_volumes: bool,
    /// The stack is stopped by its operator
    /// ([`flotilla_common::wire::messages::Placement::held`]).
    #[serde(default)]
    pub held: bool,
}

impl PlacementRecord {
    /// The bytes of text this placement carries on the wire with a stack
    /// token of `auth_token` (`Placement::text_bytes`).
    pub fn text_bytes(&self, auth_token: &str) -> usize {
        flotilla_common::wire::messages::text_bytes(
            &[
                &self.stack_id,
                &self.flag,
                &self.version_id,
                &self.spec_json,
                auth_token,
                &self.pool,
            ],
            &self.policy,
        )
    }
}

/// An agent's desired state, numbered.
///
/// Placements are shared: every agent a configuration runs on holds the
/// same one, so ten thousand agents cost one copy of its container section
/// in memory (the store keeps these records cached, see
/// [`Store::desired`](super::Store::desired)).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DesiredRecord {
    pub generation: u64,
    pub placements: Vec<std::sync::Arc<PlacementRecord>>,
    /// Every stack ever placed on this agent (until the stack is gone):
    /// the agent may report statuses for these and no others.
    #[serde(default)]
    pub history: std::collections::BTreeSet<String>,
}

/// Where an asynchronous operation stands (the CloudMC reference's task
/// states).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    Pending,
    Success,
    Failed,
}

/// One operator operation that a 201/202 answered before it was done: a
/// new version (apply, update, scale, rollback, config) or a delete. It
/// settles when the stack does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskRecord {
    pub task_id: String,
    /// `apply`, `update`, `formation`, `rollback`, `config`, `delete`.
    pub operation: String,
    pub stack_id: String,
    /// The version the operation made; `None` for a delete.
    pub version_id: Option<String>,
    pub status: TaskStatus,
    /// Why it failed.
    pub reason: Option<String>,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
}
