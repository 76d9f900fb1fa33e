//! Types shared by the Flotilla controller and agent.
//!
//! # Layout
//! - [`ids`]: the random identifiers the Mobingi API hands out (template, version,
//!   user, stack auth token), generated in one place so their shapes stay stable.
//! - [`status`]: container statuses as agents report them, with the Mobingi names.
//!
//! Everything here is plain data: no I/O, no async, so both daemons and the
//! tests can depend on it without pulling a runtime.

pub mod ids;
pub mod status;
