//! The fleet link, controller side: the QUIC endpoint agents dial, their
//! enrollment, one control session per connected agent, and the registry
//! that pushes desired state to sessions without ever blocking a REST call.
//!
//! - [`pki`]: the private CA and the certificates it issues.
//! - [`tls`]: rustls/quinn server configuration (mutual TLS).
//! - [`listener`]: admits connections (cap, Retry, deadline) and routes them by ALPN.
//! - [`admission`]: the pure admit / retry / refuse decision.
//! - [`pending`]: counts connections not yet authenticated, and their deadline.
//! - [`shed`]: aggregated warnings about shed connections.
//! - [`enroll`]: join token + CSR → signed client certificate.
//! - [`session`]: handshake, hello, acks, status reports.
//! - [`push`]: the session's writer; desired states in parts.
//! - [`join_tokens`]: creating, listing and revoking join tokens.
//! - [`stack_tokens`]: stacks' tokens as the last pass read them, for pushes.
//! - [`registry`]: who is connected, last seen, and the push channels.
//! - [`drain`]: cloud notices and operator drains on agent records.

pub mod admission;
pub mod drain;
pub mod enroll;
pub mod join_tokens;
pub mod listener;
pub mod pending;
pub mod pki;
pub mod push;
pub mod registry;
pub mod session;
pub mod shed;
pub mod stack_tokens;
pub mod tls;

use std::time::Duration;

/// Timings and limits of the fleet link.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// Largest frame accepted from an agent.
    pub max_frame: usize,
    /// How often agents should send a heartbeat.
    pub heartbeat: Duration,
    /// Silence after which an agent is marked lost.
    pub lost_after: Duration,
    /// How long a lost agent keeps its placements before they move.
    pub replace_after: Duration,
    /// How long a stack may wait for enough eligible agents before it is
    /// marked failed.
    pub placement_timeout: Duration,
    /// QUIC keep-alive interval.
    pub keep_alive: Duration,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// UDP segmentation offload (some virtual NICs reject it).
    pub gso: bool,
    /// The REST API's URL as agents reach it, told to them in the welcome.
    pub api_url: Option<String>,
    /// Treat a rebalance recommendation like a termination notice.
    pub drain_on_rebalance: bool,
    /// From a connection's admission until its TLS handshake, preamble and
    /// hello (or enrollment request) are done; past it the connection is
    /// shed, so a stalled peer holds nothing for long.
    pub handshake_timeout: Duration,
    /// The cap on unauthenticated connections and where Retry starts.
    pub admission: admission::Limits,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            max_frame: flotilla_common::wire::DEFAULT_MAX_FRAME,
            heartbeat: Duration::from_secs(10),
            lost_after: Duration::from_secs(30),
            replace_after: Duration::from_secs(60),
            placement_timeout: Duration::from_secs(60),
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            gso: true,
            api_url: None,
            drain_on_rebalance: false,
            handshake_timeout: Duration::from_secs(5),
            admission: admission::Limits::default(),
        }
    }
}

use crate::store::Store;
use pki::Pki;
use registry::Registry;
use std::sync::Arc;
use tokio::sync::Notify;

/// Everything the fleet link and the scheduler share.
pub struct Fleet {
    pub store: Store,
    pub pki: Pki,
    pub registry: Registry,
    pub settings: FleetSettings,
    /// Wakes the scheduler; coalesces, never blocks.
    pub nudge: Arc<Notify>,
    /// Counters and histograms for `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Connections admitted but not authenticated yet (the cap's count).
    pub unauthenticated: Arc<pending::Unauthenticated>,
    /// Aggregated warnings about shed connections.
    pub shed_log: shed::ShedLog,
    /// The stacks' tokens for pushes, as the last pass read them.
    pub stack_tokens: stack_tokens::StackTokens,
}

impl Fleet {
    /// Asks the scheduler for a pass.
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Counts and logs (aggregated) a connection shed for `reason`.
    pub fn shed(&self, reason: shed::Shed, remote: std::net::SocketAddr) {
        self.shed_because(reason, remote, None);
    }

    /// [`Fleet::shed`] with the error that ended the connection.
    pub fn shed_because(
        &self,
        reason: shed::Shed,
        remote: std::net::SocketAddr,
        error: Option<&str>,
    ) {
        self.metrics
            .fleet_shed
            .get_or_create(&crate::metrics::ReasonLabels {
                reason: reason.name().into(),
            })
            .inc();
        self.shed_log.record(reason, remote, error);
    }
}
