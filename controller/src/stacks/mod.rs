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
//! - [`tasks`]: the task each operation answers with, and when it settles.
//! - [`restart`]: rolling restarts, one instance at a time.
//! - [`stop`]: stopping and starting a stack everywhere.
//! - [`Stacks::delete`]: the one operation that makes no version.

pub mod checks;
pub mod config_vars;
pub mod error;
pub mod formation;
pub mod restart;
pub mod rollback;
pub mod stop;
pub mod tasks;
pub mod versions;

pub use error::{StackError, StackResult};
pub use versions::{Actor, Change, Released, RunningConfig};

use crate::fleet::Fleet;
use crate::store::{StackRecord, StackStatus, Store, TaskStatus};
use serde_json::{Map, Value};

/// A delete under way.
#[derive(Debug)]
pub struct Deleted {
    pub status: StackStatus,
    pub task_id: String,
}

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
        let previous = self.latest_body(stack)?;
        let body = formation::scale(&previous, &counts)?;
        self.release(stack, actor, &previous, body, Change::Scaled(counts))
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
        let previous = self.latest_body(stack)?;
        self.release(stack, actor, &previous, body, change).await
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
        let previous = self.latest_body(stack)?;
        let (body, changed) = config_vars::patch(&previous, flag, changes)?;
        let change = Change::Config {
            flag: flag.to_owned(),
            set: changed.set,
            unset: changed.unset,
        };
        self.release(stack, actor, &previous, body, change).await
    }

    /// Starts deleting a stack (`DELETE_IN_PROGRESS`; the scheduler
    /// completes it once its containers are gone). Repeating it is
    /// harmless: the answer names the delete task already under way.
    pub async fn delete(&self, stack: &StackRecord, actor: Actor<'_>) -> StackResult<Deleted> {
        let now = crate::clock::now_ms();
        if stack.stack_status.is_deleting() {
            let pending = self
                .store
                .pending_tasks(&stack.stack_id)?
                .into_iter()
                .find(|t| t.operation == tasks::DELETE);
            let task = match pending {
                Some(task) => task,
                None => {
                    // Deleted before tasks existed, or already gone.
                    let mut task = tasks::pending(tasks::DELETE, &stack.stack_id, None, now);
                    if stack.stack_status != StackStatus::DeleteInProgress {
                        task.status = if stack.stack_status == StackStatus::DeleteComplete {
                            TaskStatus::Success
                        } else {
                            TaskStatus::Failed
                        };
                        task.finished_ms = Some(now);
                    }
                    self.store.put_task(&task)?;
                    self.store.flush().await?;
                    task
                }
            };
            return Ok(Deleted {
                status: stack.stack_status,
                task_id: task.task_id,
            });
        }
        let task = tasks::pending(tasks::DELETE, &stack.stack_id, None, now);
        self.store.put_task(&task)?;
        self.store
            .set_stack_status(&stack.stack_id, StackStatus::DeleteInProgress, None, now)?;
        tasks::supersede(
            self.store,
            &stack.stack_id,
            &task.task_id,
            tasks::DELETE,
            None,
            now,
        )?;
        let event = crate::events::Event::StackDeleting {
            task_id: &task.task_id,
        };
        self.store
            .record(&event, Some(&stack.stack_id), None, now)?;
        let record = crate::audit::Record {
            action: crate::audit::Action::StackDelete,
            target: &stack.stack_id,
            stack_id: Some(&stack.stack_id),
            instance_id: None,
            changes: serde_json::json!({ "task_id": task.task_id }),
        };
        crate::audit::append(self.store, actor, record, now)?;
        self.store.flush().await?;
        self.fleet.nudge();
        tracing::info!(stack_id = %stack.stack_id, task_id = %task.task_id, "stack deletion started");
        Ok(Deleted {
            status: StackStatus::DeleteInProgress,
            task_id: task.task_id,
        })
    }

    /// The variables of configuration `flag` in the latest version,
    /// secrets redacted.
    /// A configuration's environment, secrets redacted. A stack being
    /// deleted runs nothing any more, so its config vars are gone (404),
    /// as a deleted resource's parts are.
    pub fn config(&self, stack: &StackRecord, flag: &str) -> StackResult<Map<String, Value>> {
        if stack.stack_status.is_deleting() {
            return Err(StackError::NotFound {
                kind: "stack",
                id: stack.stack_id.clone(),
            });
        }
        config_vars::view(&self.latest_body(stack)?, flag)
    }
}
