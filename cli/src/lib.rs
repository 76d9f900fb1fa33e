//! `flotilla`: the operator's command line, a client of the controller's
//! REST API.
//!
//! # Layout
//! - [`session`]: where the controller is and the cached token (0600).
//! - [`client`]: the REST calls, with the API's error shape turned into
//!   one readable line.
//! - [`table`]: plain aligned tables for people, `--json` for scripts.
//! - [`wait`]: `--wait`: live progress per configuration and instance.
//! - [`stream`]: the event stream (SSE, resumed after disconnects) and
//!   container logs.
//! - [`commands`]: one function per subcommand.
//! - [`pools`]: pools and join tokens.
//! - [`releases`]: scale, rollback and config vars.
//! - [`audit`]: the audit trail.
//! - [`restarts`]: rolling restarts.

pub mod audit;
pub mod client;
pub mod commands;
pub mod pools;
pub mod releases;
pub mod restarts;
pub mod session;
pub mod stream;
pub mod table;
pub mod wait;
