//! Tasks: what a 201/202 promised, settled when its stack settles. The
//! pending ones are indexed by stack, so settling one stack reads only its
//! own; finished ones are pruned with the event retention.

use super::{
    decode, encode, get, pair_key, pair_prefix, Store, StoreResult, TaskRecord, TaskStatus,
};

impl Store {
    /// Stores a task (and indexes it by stack while it is pending).
    pub fn put_task(&self, task: &TaskRecord) -> StoreResult<()> {
        self.tasks
            .insert(task.task_id.as_bytes(), encode("tasks", task)?)?;
        let key = pair_key(&task.stack_id, &task.task_id);
        if task.status == TaskStatus::Pending {
            self.pending_tasks.insert(key, &[])?;
        } else {
            self.pending_tasks.remove(key)?;
        }
        Ok(())
    }

    /// Removes a task that never started (its operation was refused).
    pub fn remove_task(&self, task: &TaskRecord) -> StoreResult<()> {
        self.tasks.remove(task.task_id.as_bytes())?;
        self.pending_tasks
            .remove(pair_key(&task.stack_id, &task.task_id))?;
        Ok(())
    }

    /// One task.
    pub fn task(&self, task_id: &str) -> StoreResult<Option<TaskRecord>> {
        get(&self.tasks, "tasks", task_id.as_bytes())
    }

    /// The pending tasks of one stack.
    pub fn pending_tasks(&self, stack_id: &str) -> StoreResult<Vec<TaskRecord>> {
        let mut found = Vec::new();
        for entry in self.pending_tasks.scan_prefix(pair_prefix(stack_id)) {
            let (key, _) = entry?;
            let task_id = key.get(stack_id.len() + 1..).unwrap_or_default();
            if let Some(bytes) = self.tasks.get(task_id)? {
                found.push(decode("tasks", task_id, &bytes)?);
            }
        }
        Ok(found)
    }

    /// Removes finished tasks that finished before `before_ms`.
    pub fn prune_tasks(&self, before_ms: i64) -> StoreResult<usize> {
        let mut removed = 0;
        for entry in self.tasks.iter() {
            let (key, value) = entry?;
            let task: TaskRecord = decode("tasks", &key, &value)?;
            if task.finished_ms.is_some_and(|at| at < before_ms) {
                self.tasks.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, stack: &str, status: TaskStatus, finished: Option<i64>) -> TaskRecord {
        TaskRecord {
            task_id: id.into(),
            operation: "update".into(),
            stack_id: stack.into(),
            version_id: Some("v".into()),
            status,
            reason: None,
            created_ms: 0,
            finished_ms: finished,
        }
    }

    #[test]
    fn pending_tasks_are_found_by_stack_and_old_finished_ones_pruned() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path(), 1 << 20).expect("store");
        store
            .put_task(&task("t1", "s1", TaskStatus::Pending, None))
            .expect("put");
        store
            .put_task(&task("t2", "s1", TaskStatus::Pending, None))
            .expect("put");
        store
            .put_task(&task("t3", "s10", TaskStatus::Pending, None))
            .expect("put");
        let ids = |stack| -> Vec<String> {
            store
                .pending_tasks(stack)
                .expect("pending")
                .into_iter()
                .map(|t| t.task_id)
                .collect()
        };
        assert_eq!(ids("s1"), ["t1", "t2"]);
        store
            .put_task(&task("t1", "s1", TaskStatus::Success, Some(5)))
            .expect("settle");
        assert_eq!(ids("s1"), ["t2"]);
        assert_eq!(store.prune_tasks(5).expect("prune"), 0);
        assert_eq!(store.prune_tasks(6).expect("prune"), 1);
        assert!(store.task("t1").expect("read").is_none());
        assert!(store.task("t2").expect("read").is_some());
    }
}
