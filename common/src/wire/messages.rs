//! Messages of the fleet link.
//!
//! Identity is never in a message: the controller knows which agent is
//! speaking from the client certificate of the connection, so nothing an
//! agent writes can make it speak for another.

use crate::status::ContainerStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Agent → controller, on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentMessage {
    /// First message after the handshake.
    Hello(Hello),
    /// The desired state of this generation is persisted on the agent.
    Ack { generation: u64 },
    /// The agent could not assemble this generation (parts missing, out
    /// of range, repeated, or past [`super::bounds::MAX_DESIRED_PARTS`] /
    /// [`super::bounds::MAX_DESIRED_BYTES`]); it keeps the one it has.
    /// The session stays up: one bad generation never costs the link.
    DesiredRefused { generation: u64, reason: String },
    /// Status transitions, in sequence order.
    Status(Vec<StatusReport>),
    /// Liveness and host facts.
    Heartbeat(HostFacts),
    /// Something happened to the VM itself (a cloud notice, a finished
    /// drain). Persisted on the agent and re-sent until acknowledged.
    Lifecycle(LifecycleReport),
}

/// Controller → agent, on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControllerMessage {
    /// Answer to [`Hello`]: who the controller takes this agent to be.
    Welcome(Welcome),
    /// A new desired state for this agent begins: `parts` placements
    /// follow as [`ControllerMessage::DesiredPart`], then
    /// [`ControllerMessage::DesiredEnd`]. Level-triggered: the whole
    /// generation replaces the previous one, and a generation is applied
    /// only once all its parts are in (see [`super::parts`]), so no
    /// combination of stacks makes one frame too large.
    DesiredBegin(DesiredHeader),
    /// One placement of the generation being sent.
    DesiredPart(Box<DesiredPart>),
    /// Every part of this generation has been sent.
    DesiredEnd { generation: u64 },
    /// Every status report with a sequence number up to `seq` is persisted
    /// on the controller; the agent may drop them from its outbox.
    StatusAck { seq: u64 },
    /// An operator's action on this agent's containers of a stack.
    Command(Command),
    /// The lifecycle report with this id is persisted on the controller.
    LifecycleAck { id: u64 },
}

/// A lifecycle report: numbered per agent (from 1, never reused) so the
/// controller applies each once, whichever way and however often it comes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleReport {
    pub id: u64,
    /// When the agent saw it (ms since the epoch, agent clock).
    pub time_ms: i64,
    pub event: LifecycleEvent,
}

/// What happened to the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LifecycleEvent {
    /// The cloud announced the VM's end (or, for `rebalance`, a raised risk
    /// of it).
    Notice(CloudNotice),
    /// Every container of this agent is stopped; the VM may go.
    Drained {
        /// How many containers the drain stopped.
        stopped: u32,
    },
}

/// A cloud's spot or preemption notice, as the agent read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudNotice {
    /// `aws`, `gcp` or `azure`.
    pub cloud: String,
    /// `terminate`, `stop`, `hibernate`, `preempt`, `maintenance` or
    /// `rebalance`.
    pub action: String,
    /// When the cloud acts (ms since the epoch), as announced or as the
    /// cloud documents it when the notice carries no time.
    pub deadline_ms: Option<i64>,
}

impl CloudNotice {
    /// A rebalance recommendation warns; every other notice ends the VM.
    pub fn is_final(&self) -> bool {
        self.action != "rebalance"
    }
}

/// An operator action on the containers of one stack on one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub stack_id: String,
    /// One configuration, or all of the stack's on this agent.
    pub flag: Option<String>,
    pub action: Action,
}

/// What an operator can do to a running container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Stop (SIGTERM, grace, SIGKILL) and start again.
    Restart,
    /// Stop and keep stopped until started (or the spec changes).
    Stop,
    /// Start a container stopped by an operator.
    Start,
}

/// Controller → agent, first frame of a log stream (a stream the
/// controller opens on the control connection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    pub stack_id: String,
    pub flag: Option<String>,
    /// Lines from the end to start with (all when `None`).
    pub tail: Option<u32>,
    /// Keep streaming new lines until the controller closes the stream.
    pub follow: bool,
}

/// Agent → controller, on a log stream. The first frame is always an
/// empty `Chunk`: the agent took the request, so the controller can answer
/// its caller (or time out with 504 when no agent answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogsFrame {
    /// Output bytes (stdout and stderr, interleaved as the engine gives them).
    Chunk(Vec<u8>),
    /// The stream is over; `error` says why when it did not end normally.
    End { error: Option<String> },
}

/// What an agent says about itself when it connects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub agent_version: String,
    /// Labels the agent detected or was given (`instance_type`, `zone`,
    /// `lifecycle=spot|on-demand`, ...). Descriptive only: the pin and the
    /// instance id come from enrollment.
    pub labels: BTreeMap<String, String>,
    /// The generation of the desired state the agent has persisted.
    pub generation: u64,
    pub facts: HostFacts,
}

/// The controller's answer to [`Hello`]. Its `Debug` leaves out the token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub agent_id: String,
    pub instance_id: String,
    /// How often the controller expects a heartbeat.
    pub heartbeat_secs: u32,
    /// The highest status sequence number already persisted, so the agent
    /// can drop those from its outbox at once.
    pub acked_seq: u64,
    /// The highest lifecycle report id already persisted.
    pub acked_lifecycle: u64,
    /// The controller's REST API (`http://host:port`), for the agent's
    /// fallback when the link is down; `None` when not configured.
    pub api_url: Option<String>,
    /// This agent's own REST token, new for every session (the previous
    /// one stops working): the bearer of its REST fallback
    /// (`POST /v3/event/spot/shutdown`), which then speaks for this agent
    /// only. Empty when the controller could not make one.
    pub agent_token: String,
}

impl std::fmt::Debug for Welcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Welcome")
            .field("agent_id", &self.agent_id)
            .field("instance_id", &self.instance_id)
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("acked_seq", &self.acked_seq)
            .field("acked_lifecycle", &self.acked_lifecycle)
            .field("api_url", &self.api_url)
            .field("agent_token", &"<redacted>")
            .finish()
    }
}

/// Everything an agent should be running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Increases by one each time this agent's desired state changes.
    pub generation: u64,
    pub placements: Vec<Placement>,
}

/// The start of a generation sent in parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredHeader {
    /// Increases by one each time this agent's desired state changes.
    pub generation: u64,
    /// How many [`DesiredPart`]s make the generation (0: run nothing).
    pub parts: u32,
}

/// One placement of a generation, one frame each: a placement is bounded
/// (the container section is capped at apply), so a part always fits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredPart {
    pub generation: u64,
    /// 0-based position in the generation, below [`DesiredHeader::parts`].
    pub index: u32,
    pub placement: Placement,
}

/// One configuration of one stack, placed on this agent. Its `Debug`
/// leaves out the spec (registry passwords, keys) and the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub stack_id: String,
    pub flag: String,
    /// The template version this placement comes from.
    pub version_id: String,
    /// The configuration's `container` section, as JSON text (the runtime
    /// parses it; JSON keeps unknown fields).
    pub spec_json: String,
    /// The stack's `auth_token`: lets the agent report a spot notice over
    /// REST (`POST /v3/event/spot/shutdown`) while the link is down.
    #[serde(default)]
    pub auth_token: String,
    /// The pool the configuration runs in.
    #[serde(default)]
    pub pool: String,
    /// The pool's container policy: the agent checks the spec against it
    /// again before it creates a container.
    #[serde(default)]
    pub policy: crate::policy::Policy,
    /// Named volumes are the stack's own (the agent prefixes them with the
    /// stack id). `false` only for stacks created before volumes were
    /// scoped, so their volumes keep their names.
    #[serde(default)]
    pub scoped_volumes: bool,
    /// The stack is stopped by its operator: the container stays stopped
    /// (a new version is recorded, not started) until the stack is started.
    #[serde(default)]
    pub held: bool,
}

impl Placement {
    /// The bytes of text this placement holds (spec, ids, token, pool,
    /// policy): what the agent counts against
    /// [`super::bounds::MAX_DESIRED_BYTES`] while assembling, and the
    /// scheduler against the same bound when placing.
    pub fn text_bytes(&self) -> usize {
        text_bytes(
            &[
                &self.stack_id,
                &self.flag,
                &self.version_id,
                &self.spec_json,
                &self.auth_token,
                &self.pool,
            ],
            &self.policy,
        )
    }
}

/// The bytes of text of a placement with these fields and policy: one
/// measure for the scheduler (from its records) and the agent (from the
/// wire).
pub fn text_bytes(fields: &[&str], policy: &crate::policy::Policy) -> usize {
    fields
        .iter()
        .map(|f| f.len())
        .fold(policy.text_bytes(), usize::saturating_add)
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placement")
            .field("stack_id", &self.stack_id)
            .field("flag", &self.flag)
            .field("version_id", &self.version_id)
            .field(
                "spec_json",
                &format_args!("<{} bytes>", self.spec_json.len()),
            )
            .field("auth_token", &"<redacted>")
            .field("pool", &self.pool)
            .field("scoped_volumes", &self.scoped_volumes)
            .finish()
    }
}

/// One status transition of one placed container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Per-agent sequence number, starting at 1, never reused.
    pub seq: u64,
    pub stack_id: String,
    pub flag: String,
    pub version_id: String,
    pub status: ContainerStatus,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    /// When the transition happened (ms since the epoch, agent clock).
    pub time_ms: i64,
    /// The git commit deployed, for code deploys.
    pub commit: Option<String>,
}

/// Host facts, sent in [`Hello`] and every heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    pub hostname: String,
    pub agent_version: String,
    pub cpus: u32,
    /// One-minute load average.
    pub load1: f64,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub disk_total_bytes: u64,
    pub disk_free_bytes: u64,
    pub uptime_secs: u64,
}

/// Agent → controller on an enrollment connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub join_token: String,
    /// PKCS#10 certificate signing request (DER) for the agent's own key.
    pub csr_der: Vec<u8>,
    pub instance_id: String,
    pub hostname: String,
}

/// Controller → agent on an enrollment connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EnrollResponse {
    Accepted {
        agent_id: String,
        instance_id: String,
        /// The agent's certificate (DER), signed by the controller's CA.
        cert_der: Vec<u8>,
        /// The CA certificate (DER), to verify the controller from now on.
        ca_der: Vec<u8>,
    },
    Refused {
        reason: String,
    },
}
