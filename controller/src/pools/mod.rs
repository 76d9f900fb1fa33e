//! Pools: which agents a stack may land on, and who may put it there.
//!
//! Every agent belongs to one pool for life (its join token names it).
//! A user may place stacks in, and create join tokens for, the pools that
//! list them; admins may use every pool. Each configuration's pool is
//! resolved when its version is stored and never changes for that
//! version, so placement never has to guess.
//!
//! Everything here is pure: the REST handlers load the records and act on
//! the answers.

pub mod rules;

pub use rules::{blockers, may_use, resolve, valid_name, Blocker, PoolChoice};
