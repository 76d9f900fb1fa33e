//! Tasks: every operation a 201/202 answers before it is done gets one,
//! and it settles with its stack: SUCCESS once the stack has settled on
//! the task's version everywhere (a delete: once the stack is gone),
//! FAILED with the reason when the stack failed, was deleted, or a later
//! version superseded it. The decisions are pure; [`settle`] applies them.

use crate::store::{StackStatus, Store, StoreResult, TaskRecord, TaskStatus};

/// The operation that deletes a stack (every other makes a version).
pub const DELETE: &str = "delete";

/// What becomes of a pending task when its stack moves to `status`,
/// having been observed at `version_id` (`reason`: the stack's).
pub fn on_status(
    task: &TaskRecord,
    version_id: &str,
    status: StackStatus,
    reason: Option<&str>,
) -> Option<(TaskStatus, Option<String>)> {
    let deleting = task.operation == DELETE;
    // A restart makes no version: it ends by its own driver, or with the
    // stack.
    if task.operation == super::restart::RESTART && status != StackStatus::DeleteComplete {
        return None;
    }
    let ours = task.version_id.as_deref() == Some(version_id);
    let why = |status: StackStatus| {
        let name = serde_json::to_value(status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        match reason {
            Some(reason) => format!("the stack is {name}: {reason}"),
            None => format!("the stack is {name}"),
        }
    };
    match status {
        StackStatus::DeleteComplete if deleting => Some((TaskStatus::Success, None)),
        StackStatus::DeleteComplete => {
            Some((TaskStatus::Failed, Some("the stack was deleted".to_owned())))
        }
        StackStatus::DeleteFailed if deleting => Some((TaskStatus::Failed, Some(why(status)))),
        StackStatus::CreateComplete | StackStatus::UpdateComplete if ours && !deleting => {
            Some((TaskStatus::Success, None))
        }
        StackStatus::CreateFailed | StackStatus::UpdateFailed if ours && !deleting => {
            Some((TaskStatus::Failed, Some(why(status))))
        }
        _ => None,
    }
}

/// Why a pending task ends when a new operation starts on its stack:
/// a new version supersedes every other version's task; a delete ends
/// them all.
pub fn on_new_operation(
    task: &TaskRecord,
    operation: &str,
    version_id: Option<&str>,
) -> Option<String> {
    if task.operation == DELETE {
        return None;
    }
    match version_id {
        Some(new) if task.version_id.as_deref() != Some(new) => {
            Some(format!("superseded by version {new} ({operation})"))
        }
        Some(_) => None,
        None => Some("the stack is being deleted".to_owned()),
    }
}

fn finish(
    store: &Store,
    mut task: TaskRecord,
    outcome: (TaskStatus, Option<String>),
    now: i64,
) -> StoreResult<()> {
    task.status = outcome.0;
    task.reason = outcome.1;
    task.finished_ms = Some(now);
    tracing::info!(task_id = %task.task_id, stack_id = %task.stack_id, status = ?task.status, reason = ?task.reason, "task settled");
    store.put_task(&task)
}

/// Settles the stack's pending tasks that its move to `status` decides.
pub fn settle(
    store: &Store,
    stack_id: &str,
    version_id: &str,
    status: StackStatus,
    reason: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    for task in store.pending_tasks(stack_id)? {
        if let Some(outcome) = on_status(&task, version_id, status, reason) {
            finish(store, task, outcome, now)?;
        }
    }
    Ok(())
}

/// Ends one task, if it is still pending, with `outcome`.
pub fn end(
    store: &Store,
    stack_id: &str,
    task_id: &str,
    outcome: (TaskStatus, Option<String>),
    now: i64,
) -> StoreResult<()> {
    let task = store
        .pending_tasks(stack_id)?
        .into_iter()
        .find(|t| t.task_id == task_id);
    match task {
        Some(task) => finish(store, task, outcome, now),
        None => Ok(()),
    }
}

/// Ends the pending tasks a new operation supersedes (`except`: its own).
pub fn supersede(
    store: &Store,
    stack_id: &str,
    except: &str,
    operation: &str,
    version_id: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    for task in store.pending_tasks(stack_id)? {
        if task.task_id == except {
            continue;
        }
        if let Some(reason) = on_new_operation(&task, operation, version_id) {
            finish(store, task, (TaskStatus::Failed, Some(reason)), now)?;
        }
    }
    Ok(())
}

/// A new pending task.
pub fn pending(operation: &str, stack_id: &str, version_id: Option<&str>, now: i64) -> TaskRecord {
    TaskRecord {
        task_id: format!(
            "task-{}",
            flotilla_common::ids::random_alphanumeric(24).to_ascii_lowercase()
        ),
        operation: operation.to_owned(),
        stack_id: stack_id.to_owned(),
        version_id: version_id.map(str::to_owned),
        status: TaskStatus::Pending,
        reason: None,
        created_ms: now,
        finished_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StackStatus as S;
    use TaskStatus as T;

    fn task(operation: &str, version: Option<&str>) -> TaskRecord {
        pending(operation, "s", version, 0)
    }

    #[test]
    fn a_task_settles_with_its_stack() {
        let v1 = task("update", Some("v1"));
        let del = task(DELETE, None);
        for (task, seen, status, reason, want) in [
            (&v1, "v1", S::UpdateComplete, None, Some((T::Success, None))),
            (&v1, "v1", S::CreateComplete, None, Some((T::Success, None))),
            (&v1, "v2", S::UpdateComplete, None, None),
            (&v1, "v1", S::UpdateInProgress, Some("waiting"), None),
            (
                &v1,
                "v1",
                S::UpdateFailed,
                Some("i-1: start-failure"),
                Some((
                    T::Failed,
                    Some("the stack is UPDATE_FAILED: i-1: start-failure".to_owned()),
                )),
            ),
            (
                &v1,
                "v1",
                S::DeleteComplete,
                None,
                Some((T::Failed, Some("the stack was deleted".to_owned()))),
            ),
            (&del, "v1", S::UpdateComplete, None, None),
            (
                &del,
                "v1",
                S::DeleteComplete,
                None,
                Some((T::Success, None)),
            ),
            (
                &del,
                "v1",
                S::DeleteFailed,
                None,
                Some((T::Failed, Some("the stack is DELETE_FAILED".to_owned()))),
            ),
        ] {
            assert_eq!(
                on_status(task, seen, status, reason),
                want,
                "{task:?} {seen} {status:?}"
            );
        }
    }

    #[test]
    fn a_new_operation_supersedes_other_versions() {
        let v1 = task("update", Some("v1"));
        let del = task(DELETE, None);
        for (task, operation, version, want) in [
            (
                &v1,
                "formation",
                Some("v2"),
                Some("superseded by version v2 (formation)"),
            ),
            (&v1, "update", Some("v1"), None),
            (&v1, DELETE, None, Some("the stack is being deleted")),
            (&del, "update", Some("v2"), None),
        ] {
            assert_eq!(
                on_new_operation(task, operation, version).as_deref(),
                want,
                "{task:?} {operation}"
            );
        }
    }
}
