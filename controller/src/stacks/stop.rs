//! Stopping and starting a stack (Tutum's application stop/start): the
//! stack's flag goes with every placement (`held`), so each agent keeps
//! the containers stopped through its restarts, reconnects and
//! clean-ups, and a new version of a stopped stack is recorded but not
//! started. The stack is `UPDATE_IN_PROGRESS` until every container says
//! `stopped` (or, started, `running`); the task settles with it.

use super::error::{StackError, StackResult};
use super::tasks;
use super::{Actor, Stacks};
use crate::clock;
use crate::store::{StackRecord, StackStatus};

/// The task operations.
pub const STOP: &str = "stop";
pub const START: &str = "start";

/// A stop or start under way.
#[derive(Debug)]
pub struct Held {
    pub stack_status: StackStatus,
    pub task_id: String,
}

impl Stacks<'_> {
    /// Stops (`stopped`) or starts the stack's containers everywhere.
    pub async fn set_stopped(
        &self,
        stack: &StackRecord,
        actor: Actor<'_>,
        stopped: bool,
    ) -> StackResult<Held> {
        let deleting = || StackError::Deleting {
            stack_id: stack.stack_id.clone(),
            status: stack.stack_status,
        };
        if stack.stack_status.is_deleting() {
            return Err(deleting());
        }
        let (operation, action) = if stopped {
            (STOP, crate::audit::Action::StackStop)
        } else {
            (START, crate::audit::Action::StackStart)
        };
        let now = clock::now_ms();
        let version = stack.latest_version_id.as_str();
        let task = tasks::pending(operation, &stack.stack_id, Some(version), now);
        self.store.put_task(&task)?;
        let Some(updated) = self
            .store
            .set_stack_stopped(&stack.stack_id, stopped, now)?
        else {
            self.store.remove_task(&task)?;
            return Err(StackError::NotFound {
                kind: "stack",
                id: stack.stack_id.clone(),
            });
        };
        if updated.stack_status.is_deleting() {
            self.store.remove_task(&task)?;
            return Err(deleting());
        }
        let event = crate::events::Event::StackHold {
            stopped,
            version_id: version,
            task_id: &task.task_id,
        };
        let data = event.data();
        self.store
            .record(&event, Some(&stack.stack_id), None, now)?;
        let record = crate::audit::Record {
            action,
            target: &stack.stack_id,
            stack_id: Some(&stack.stack_id),
            instance_id: None,
            changes: data,
        };
        crate::audit::append(self.store, actor, record, now)?;
        self.store.flush().await?;
        self.fleet.nudge();
        tracing::info!(stack_id = %stack.stack_id, stopped, task_id = %task.task_id, "stack hold changed");
        Ok(Held {
            stack_status: updated.stack_status,
            task_id: task.task_id,
        })
    }
}
