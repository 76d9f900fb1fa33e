//! The Flotilla agent: one per VM. It enrolls once with a join token, then
//! holds a mutual-TLS QUIC connection to the controller, persists the
//! desired state it is given before acknowledging it, hands it to the
//! runtime, and reports every status transition through a persistent
//! outbox, so nothing is lost across disconnects or restarts.
//!
//! # Layout
//! - [`config`]: command line, `FLOTILLA_AGENT_*` variables, TOML file.
//! - [`daemon`]: every task of a running agent, started and stopped
//!   together ([`daemon::start`]).
//! - [`identity`]: the agent's key, certificate and CA on disk.
//! - [`enroll`]: first contact: join token + CSR → certificate.
//! - [`tls`]: client TLS (pinned-CA verification for enrollment, mutual
//!   TLS afterwards).
//! - [`state`]: the agent's sled store: desired state, outbox, sequence.
//! - [`link`]: the control session and its reconnect loop.
//! - [`runtime`]: what turns desired state into containers, behind a trait.
//! - [`facts`]: host facts from sysinfo.
//! - [`spot`]: the clouds' metadata services: detection, instance facts,
//!   the notice watcher and the notice's REST fallback.
//! - [`metrics`]: Prometheus metrics on a local port.
//! - [`reporter`]: numbers and persists status and lifecycle reports, in
//!   order.
//! - [`traffic`]: host ports routed by the agent's nftables table, so an
//!   update switches traffic without dropping a request.
//! - [`lifecycle`]: what a notice sets off: report it once, drain before
//!   the deadline, report drained.

pub mod config;
pub mod daemon;
pub mod enroll;
pub mod facts;
pub mod identity;
pub mod lifecycle;
pub mod link;
pub mod metrics;
pub mod reporter;
pub mod runtime;
pub mod spot;
pub mod state;
pub mod tls;
pub mod traffic;
