//! The Flotilla controller: the Mobingi ALM v3 REST API over an embedded
//! store.
//!
//! # Layout
//! - [`config`]: command line, environment and TOML file merged and checked.
//! - [`server`]: start-up (data dir, store, bootstrap admin), background
//!   tasks, graceful shutdown.
//! - [`api`]: the REST routes, one module per resource, the one error shape,
//!   extractors, and the generated OpenAPI document.
//! - [`audit`]: the audit trail: who did what, recorded as `audit` events.
//! - [`auth`]: clients, secrets and access tokens.
//! - [`template`]: template validation and comparison.
//! - [`stacks`]: operations on stacks (apply, update, scale, rollback,
//!   config vars) between the handlers and the store: every new version
//!   is made in one place.
//! - [`events`]: every kind of event the log records, typed.
//! - [`fleet`]: the QUIC fleet link: CA, enrollment, agent sessions, join tokens.
//! - [`hook_targets`]: where a webhook may deliver (never inward), checked
//!   at subscription and after DNS at every connection.
//! - [`hooks`]: webhooks: fan-out of events, signed deliveries, retries.
//! - [`metrics`]: the Prometheus metrics served at `/metrics`.
//! - [`pools`]: who may use which pool of agents (pure rules).
//! - [`quotas`]: how many stacks, hooks, join tokens and access tokens one
//!   user or credential may hold (pure decisions).
//! - [`reports`]: container status reports, one shape whichever path
//!   brought them.
//! - [`rest_tls`]: HTTPS for the REST API (operator files or the fleet CA).
//! - [`scheduler`]: placement, per-agent desired state, stack status.
//! - [`store`]: all persistent state, behind one module (sled today).
//! - [`cli`]: the `flotilla-controller` command line, including the
//!   `client` subcommands.
//! - [`clock`], [`nickname`]: timestamps in the API's formats, stack nicknames.

// The OpenAPI document's container section is one `json!` literal.
#![recursion_limit = "256"]

pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod events;
pub mod fleet;
pub mod hook_targets;
pub mod hooks;
pub mod metrics;
pub mod nickname;
pub mod pools;
pub mod quotas;
pub mod reports;
pub mod rest_tls;
pub mod scheduler;
pub mod serve;
pub mod server;
pub mod stacks;
pub mod store;
pub mod template;
