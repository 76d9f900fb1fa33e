//! Operations on stacks, between the REST handlers and the store: a
//! handler parses its request, calls one function here and renders what
//! it returns. Every operation that changes what a stack runs makes a new
//! version through [`Stacks::release`], so checks, vendor, secrets,
//! events and the scheduler's nudge are the same whichever operation it
//! was.
//!
//! # Layout
//! - [`error`]: why an operation was refused ([`StackError`]).
//! - [`checks`]: what a body must pass before it is stored.
//! - [`versions`]: creating a stack and storing its next version.
//! - [`formation`], [`rollback`], [`config_vars`]: what scale, rollback
//!   and config changes make of the latest body (pure functions).

pub mod checks;
pub mod config_vars;
pub mod error;
pub mod formation;
pub mod rollback;
pub mod versions;

pub use error::{StackError, StackResult};
pub use versions::{Actor, Change, Released, RunningConfig};

use crate::fleet::Fleet;
use crate::store::{StackRecord, Store};
use serde_json::{Map, Value};

/// What stack operations need: the store, the operator's limits, and the
/// scheduler to wake once a version is stored.
pub struct Stacks<'a> {
    pub store: &'a Store,
    pub fleet: &'a Fleet,
    /// Largest container section of one configuration (compact JSON).
    pub max_container_section: usize,
    pub quotas: &'a crate::quotas::Quotas,
}

impl Stacks<'_> {
    /// A new version equal to the latest except for these instance counts.
    pub async fn scale(
        &self,
        stack: &StackRecord,
        actor: Actor<'_>,
        counts: Vec<(String, u64)>,
    ) -> StackResult<Released> {
        let body = formation::scale(&self.latest_body(stack)?, &counts)?;
        self.release(stack, actor, body, Change::Scaled(counts))
            .await
    }

    /// A new version whose body is that of `version_id` (default: the one
    /// before the latest). History is kept: nothing stored changes.
    pub async fn rollback(
        &self,
        stack: &StackRecord,
        actor: Actor<'_>,
        version_id: Option<&str>,
    ) -> StackResult<Released> {
        let versions = self.store.versions(&stack.stack_id)?;
        let target = rollback::target(&versions, stack.latest_seq, version_id)?;
        let body = versions::stored_body(target)?;
        let change = Change::RolledBack {
            to_version_id: target.version_id.clone(),
        };
        self.release(stack, actor, body, change).await
    }

    /// A new version with configuration `flag`'s variables set (values)
    /// and removed (`null`).
    pub async fn set_config(
        &self,
        stack: &StackRecord,
        actor: Actor<'_>,
        flag: &str,
        changes: &Map<String, Value>,
    ) -> StackResult<Released> {
        let (body, changed) = config_vars::patch(&self.latest_body(stack)?, flag, changes)?;
        let change = Change::Config {
            flag: flag.to_owned(),
            set: changed.set,
            unset: changed.unset,
        };
        self.release(stack, actor, body, change).await
    }

    /// The variables of configuration `flag` in the latest version,
    /// secrets redacted.
    pub fn config(&self, stack: &StackRecord, flag: &str) -> StackResult<Map<String, Value>> {
        config_vars::view(&self.latest_body(stack)?, flag)
    }
}
