//! Types shared by the Flotilla controller and agent.
//!
//! # Layout
//! - [`commit`]: group commit: one thread flushes a store for all waiting writers.
//! - [`files`]: writing secret files (0600) and private directories (0700).
//! - [`process`]: logging set-up and the shutdown signal both daemons use.
//! - [`ids`]: the random identifiers the Mobingi API hands out (template, version,
//!   user, stack auth token), generated in one place so their shapes stay stable.
//! - [`time`]: the wall clock in milliseconds.
//! - [`systemd`]: `Type=notify` readiness, stopping, and the watchdog.
//! - [`status`]: container statuses as agents report them, with the Mobingi names.
//! - [`wire`]: the fleet link protocol: framing, handshake, messages, close codes.
//! - [`tls`]: the crypto provider, certificate fingerprints, QUIC transport settings.
//! - [`policy`]: what a pool lets containers ask of their host (default deny).
//! - [`redact`]: credentials removed from URLs in text that leaves the process.
//! - [`spec`]: the template's container section, parsed and checked (controller and agent).

pub mod commit;
pub mod files;
pub mod ids;
pub mod policy;
pub mod process;
pub mod redact;
pub mod spec;
pub mod status;
pub mod systemd;
pub mod time;
pub mod tls;
pub mod wire;
