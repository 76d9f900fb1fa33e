//! Rolling restarts (Akkeris "dynos restart"): a stack's containers, or one
//! configuration's, restarted one instance at a time, each back to
//! `running` (which the agent reports only once its health check passes)
//! before the next is touched, so a stack with two or more instances keeps
//! serving throughout. The task says SUCCESS when the last is back, FAILED
//! with the instance and its status when one does not come back.
//!
//! What to restart and how far each instance got are pure functions of the
//! assignments and of the `container.status` events the agents' reports
//! become; [`drive`] sends the commands and reads the events.

use super::error::{StackError, StackResult};
use super::tasks;
use super::{Actor, Stacks};
use crate::clock;
use crate::fleet::Fleet;
use crate::store::{EventFilter, EventRecord, StackRecord, Store, TaskStatus};
use flotilla_common::status::ContainerStatus;
use flotilla_common::wire::messages::{Action, Command, ControllerMessage};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// The task operation of a rolling restart.
pub const RESTART: &str = "restart";

/// How long one instance may take to come back before the restart stops
/// and fails (image already there: a stop grace period, a start, a health
/// check).
pub const INSTANCE_TIMEOUT: Duration = Duration::from_secs(300);

/// One container to restart: a configuration on one agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Target {
    pub flag: String,
    pub instance_id: String,
    #[serde(skip)]
    pub agent_id: String,
}

/// The targets of a restart of `stack_id` (one `flag`, or all), ordered by
/// flag then instance: every `(flag, agent)` the scheduler assigned whose
/// agent `instance_of` knows.
pub fn targets(
    assignments: &[crate::store::Assignment],
    stack_id: &str,
    flag: Option<&str>,
    instance_of: impl Fn(&str) -> Option<String>,
) -> Vec<Target> {
    let mut out: Vec<Target> = assignments
        .iter()
        .filter(|((stack, f), _)| stack == stack_id && flag.is_none_or(|want| want == f))
        .flat_map(|((_, f), agents)| {
            agents.iter().filter_map(|agent_id| {
                Some(Target {
                    flag: f.clone(),
                    instance_id: instance_of(agent_id)?,
                    agent_id: (*agent_id).to_owned(),
                })
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.flag, &a.instance_id).cmp(&(&b.flag, &b.instance_id)));
    out
}

/// How far one instance's restart got, from the reports since the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Nothing yet that says the container went down.
    Sent,
    /// The agent is restarting it.
    Restarting,
    /// Back and healthy.
    Back,
    /// It did not come back: the status and the agent's reason.
    Failed(String),
}

/// The progress after one more `container.status` event of the stack on
/// the target's instance. A `running` before the agent said it restarts is
/// the last report from before the command; a failure status afterwards
/// ends the restart.
pub fn advance(progress: Progress, target: &Target, event: &EventRecord) -> Progress {
    let data = &event.data;
    let ours = event.kind == "container.status"
        && event.instance_id.as_deref() == Some(target.instance_id.as_str())
        && data.get("flag").and_then(|f| f.as_str()) == Some(target.flag.as_str());
    if !ours || matches!(progress, Progress::Back | Progress::Failed(_)) {
        return progress;
    }
    let Some(status) = data
        .get("status")
        .and_then(|s| s.as_str())
        .and_then(|s| s.parse::<ContainerStatus>().ok())
    else {
        return progress;
    };
    match (progress, status) {
        (_, ContainerStatus::Restarting) => Progress::Restarting,
        (Progress::Restarting, ContainerStatus::Running) => Progress::Back,
        (
            Progress::Restarting,
            ContainerStatus::AppCrashed
            | ContainerStatus::ProbeFailure
            | ContainerStatus::StartFailure
            | ContainerStatus::Terminated,
        ) => {
            let reason = data
                .get("reason")
                .and_then(|r| r.as_str())
                .map_or_else(String::new, |r| format!(": {r}"));
            Progress::Failed(format!(
                "{} on {} did not come back: {}{reason}",
                target.flag,
                target.instance_id,
                status.as_str()
            ))
        }
        (progress, _) => progress,
    }
}

/// A restart under way.
#[derive(Debug)]
pub struct Restarting {
    pub task_id: String,
    pub targets: Vec<Target>,
}

impl Stacks<'_> {
    /// Checks and records a rolling restart (its task and audit entry);
    /// [`drive`] carries it out.
    pub async fn restart(
        &self,
        stack: &StackRecord,
        actor: Actor<'_>,
        flag: Option<&str>,
    ) -> StackResult<Restarting> {
        if stack.stack_status.is_deleting() {
            return Err(StackError::Deleting {
                stack_id: stack.stack_id.clone(),
                status: stack.stack_status,
            });
        }
        if stack.stopped {
            return Err(StackError::Conflict(
                "the stack is stopped; start it (POST .../start) to run its containers".to_owned(),
            ));
        }
        if let Some(flag) = flag {
            let body = self.latest_body(stack)?;
            if crate::template::instance_count(&body, Some(flag)).is_none() {
                return Err(StackError::UnknownFlag {
                    flag: flag.to_owned(),
                    path: "flag".to_owned(),
                });
            }
        }
        let pending = self.store.pending_tasks(&stack.stack_id)?;
        if let Some(running) = pending.iter().find(|t| t.operation == RESTART) {
            return Err(StackError::Conflict(format!(
                "a restart of this stack is under way (task {})",
                running.task_id
            )));
        }
        let assignments = self.store.assignments()?;
        // Each assigned agent's instance, read first: a store error is the
        // caller's error, never a target silently left out.
        let mut instances = std::collections::HashMap::new();
        for (_, agents) in assignments
            .iter()
            .filter(|(slot, _)| slot.0 == stack.stack_id)
        {
            for agent in agents {
                if let Some(record) = self.store.agent(agent)? {
                    instances.insert(agent.clone(), record.instance_id.clone());
                }
            }
        }
        let targets = targets(&assignments, &stack.stack_id, flag, |agent| {
            instances.get(agent).cloned()
        });
        if targets.is_empty() {
            return Err(StackError::Conflict(
                "nothing to restart: no instance runs this stack (or this configuration)"
                    .to_owned(),
            ));
        }
        let now = clock::now_ms();
        let task = tasks::pending(
            RESTART,
            &stack.stack_id,
            Some(&stack.latest_version_id),
            now,
        );
        self.store.put_task(&task)?;
        let record = crate::audit::Record {
            action: crate::audit::Action::StackRestart,
            target: &stack.stack_id,
            stack_id: Some(&stack.stack_id),
            instance_id: None,
            changes: json!({
                "flag": flag,
                "task_id": task.task_id,
                "instances": targets.iter().map(|t| json!({"flag": t.flag, "instance_id": t.instance_id})).collect::<Vec<_>>(),
            }),
        };
        crate::audit::append(self.store, actor, record, now)?;
        self.store.flush().await?;
        tracing::info!(stack_id = %stack.stack_id, task_id = %task.task_id, instances = targets.len(), "rolling restart started");
        Ok(Restarting {
            task_id: task.task_id,
            targets,
        })
    }
}

/// Fails the restarts a stopped controller left half done: their drivers
/// are gone, and restarting the rest unasked would surprise the operator.
pub fn abandon(store: &Store) -> crate::store::StoreResult<usize> {
    let mut ended = 0;
    let now = clock::now_ms();
    for stack in store.stacks()? {
        for task in store.pending_tasks(&stack.stack_id)? {
            if task.operation == RESTART {
                let reason = "the controller stopped during the restart; restart again".to_owned();
                tasks::end(
                    store,
                    &stack.stack_id,
                    &task.task_id,
                    (TaskStatus::Failed, Some(reason)),
                    now,
                )?;
                ended += 1;
            }
        }
    }
    if ended > 0 {
        tracing::warn!(
            restarts = ended,
            "restarts left half done by the last run failed"
        );
    }
    Ok(ended)
}

/// Whether the task still waits (a later version, a delete or a
/// controller restart may have ended it).
fn pending(store: &Store, stack_id: &str, task_id: &str) -> bool {
    store
        .pending_tasks(stack_id)
        .is_ok_and(|tasks| tasks.iter().any(|t| t.task_id == task_id))
}

/// Carries out a rolling restart: one target at a time, the next only once
/// the one before is back. Stops as soon as its task is no longer pending.
pub async fn drive(fleet: Arc<Fleet>, stack_id: String, restarting: Restarting, timeout: Duration) {
    use tracing::Instrument;
    let span = tracing::info_span!("restart", stack_id = %stack_id, task_id = %restarting.task_id);
    async move {
        let Some(outcome) = run(&fleet, &stack_id, &restarting, timeout).await else {
            tracing::info!("restart ended by another operation");
            return;
        };
        let now = clock::now_ms();
        if let Err(err) = tasks::end(&fleet.store, &stack_id, &restarting.task_id, outcome, now) {
            tracing::error!(error = %err, "cannot settle the restart's task");
            return;
        }
        if let Err(err) = fleet.store.flush().await {
            tracing::error!(error = %err, "flush failed");
        }
    }
    .instrument(span)
    .await
}

/// The restart's outcome, or `None` when its task ended otherwise.
async fn run(
    fleet: &Fleet,
    stack_id: &str,
    restarting: &Restarting,
    timeout: Duration,
) -> Option<(TaskStatus, Option<String>)> {
    let store = &fleet.store;
    let mut wake = store.follow_events();
    for target in &restarting.targets {
        if !pending(store, stack_id, &restarting.task_id) {
            return None;
        }
        let mut after = store.latest_event_id().unwrap_or(0);
        let command = ControllerMessage::Command(Command {
            stack_id: stack_id.to_owned(),
            flag: Some(target.flag.clone()),
            action: Action::Restart,
        });
        if !fleet.registry.send(&target.agent_id, command) {
            let reason = format!("instance {} is not connected", target.instance_id);
            return Some((TaskStatus::Failed, Some(reason)));
        }
        tracing::info!(flag = %target.flag, instance_id = %target.instance_id, "restart sent");
        let deadline = tokio::time::Instant::now() + timeout;
        let mut progress = Progress::Sent;
        loop {
            let filter = EventFilter {
                after_id: Some(after),
                stack_id: Some(stack_id.to_owned()),
                instance_id: Some(target.instance_id.clone()),
                kind: Some("container.status".to_owned()),
                limit: 1000,
                ..EventFilter::default()
            };
            for event in store.events(&filter).unwrap_or_default() {
                after = after.max(event.id);
                progress = advance(progress, target, &event);
            }
            match &progress {
                Progress::Back => break,
                Progress::Failed(reason) => {
                    return Some((TaskStatus::Failed, Some(reason.clone())))
                }
                Progress::Sent | Progress::Restarting => {}
            }
            if !pending(store, stack_id, &restarting.task_id) {
                return None;
            }
            let woke = tokio::time::timeout_at(deadline, async {
                let _ = tokio::time::timeout(Duration::from_secs(1), wake.changed()).await;
            })
            .await;
            if woke.is_err() {
                let reason = format!(
                    "{} on {} was not back within {} s",
                    target.flag,
                    target.instance_id,
                    timeout.as_secs()
                );
                return Some((TaskStatus::Failed, Some(reason)));
            }
        }
        tracing::info!(flag = %target.flag, instance_id = %target.instance_id, "instance back");
    }
    Some((TaskStatus::Success, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn target(flag: &str, instance: &str) -> Target {
        Target {
            flag: flag.into(),
            instance_id: instance.into(),
            agent_id: format!("ag-{instance}"),
        }
    }

    fn report(instance: &str, flag: &str, status: &str) -> EventRecord {
        EventRecord {
            id: 1,
            time: String::new(),
            kind: "container.status".into(),
            stack_id: Some("st".into()),
            instance_id: Some(instance.into()),
            data: json!({"flag": flag, "status": status, "reason": "exit 1"}),
        }
    }

    #[test]
    fn targets_are_per_flag_and_agent_in_order() {
        let assignments = vec![
            (
                ("st".to_owned(), "Web".to_owned()),
                vec!["ag-2".to_owned(), "ag-1".to_owned()],
            ),
            (
                ("st".to_owned(), "Job".to_owned()),
                vec!["ag-1".to_owned(), "ag-gone".to_owned()],
            ),
            (
                ("other".to_owned(), "Web".to_owned()),
                vec!["ag-1".to_owned()],
            ),
        ];
        let instance = |agent: &str| (agent != "ag-gone").then(|| agent.replace("ag-", "i-"));
        let all = targets(&assignments, "st", None, instance);
        let names: Vec<(&str, &str)> = all
            .iter()
            .map(|t| (t.flag.as_str(), t.instance_id.as_str()))
            .collect();
        assert_eq!(names, [("Job", "i-1"), ("Web", "i-1"), ("Web", "i-2")]);
        assert_eq!(targets(&assignments, "st", Some("Web"), instance).len(), 2);
        assert!(targets(&assignments, "st", Some("Nope"), instance).is_empty());
    }

    #[test]
    fn progress_table() {
        let t = target("Web", "i-1");
        let failed = |status: &str| {
            Progress::Failed(format!("Web on i-1 did not come back: {status}: exit 1"))
        };
        for (reports, want) in [
            (vec![], Progress::Sent),
            // The running from before the command does not count.
            (vec![("i-1", "Web", "running")], Progress::Sent),
            (vec![("i-1", "Web", "restarting")], Progress::Restarting),
            (
                vec![("i-1", "Web", "restarting"), ("i-1", "Web", "running")],
                Progress::Back,
            ),
            // Other instances and configurations are not this target.
            (
                vec![("i-1", "Web", "restarting"), ("i-2", "Web", "running")],
                Progress::Restarting,
            ),
            (
                vec![("i-1", "Web", "restarting"), ("i-1", "Job", "running")],
                Progress::Restarting,
            ),
            (
                vec![
                    ("i-1", "Web", "restarting"),
                    ("i-1", "Web", "probe-failure"),
                ],
                failed("probe-failure"),
            ),
            (
                vec![("i-1", "Web", "restarting"), ("i-1", "Web", "app-crashed")],
                failed("app-crashed"),
            ),
            // Once back, later reports change nothing.
            (
                vec![
                    ("i-1", "Web", "restarting"),
                    ("i-1", "Web", "running"),
                    ("i-1", "Web", "app-crashed"),
                ],
                Progress::Back,
            ),
            (vec![("i-1", "Web", "bogus")], Progress::Sent),
        ] {
            let got = reports.iter().fold(Progress::Sent, |p, (i, f, s)| {
                advance(p, &t, &report(i, f, s))
            });
            assert_eq!(got, want, "{reports:?}");
        }
        let mut other = report("i-1", "Web", "restarting");
        other.kind = "agent.lost".into();
        other.data = Value::Null;
        assert_eq!(advance(Progress::Sent, &t, &other), Progress::Sent);
    }
}
