//! A runtime that runs nothing: each new placement is reported `starting`
//! then `running`, a changed one `updating` then `running`, a removed one
//! `stopping` then `terminated`. It exercises everything around the
//! runtime (persistence, outbox, acks, stack status) without Docker.

use super::{Runtime, RuntimeCommand};
use crate::state::Transition;
use flotilla_common::status::ContainerStatus;
use flotilla_common::wire::messages::Action;
use flotilla_common::wire::messages::DesiredState;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// See the module documentation.
pub struct Simulated;

impl Runtime for Simulated {
    fn spawn(
        self: Box<Self>,
        mut desired: watch::Receiver<Arc<DesiredState>>,
        reports: mpsc::Sender<Transition>,
        mut commands: mpsc::Receiver<RuntimeCommand>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // (stack, flag) -> version there, and whether it is held stopped.
            let mut running: HashMap<(String, String), (String, bool)> = HashMap::new();
            let mut commands_open = true;
            let mut draining = false;
            loop {
                let state = desired.borrow_and_update().clone();
                let mut transitions = Vec::new();
                let mut wanted: HashMap<(String, String), (String, bool)> = HashMap::new();
                let placements = if draining {
                    &[][..]
                } else {
                    &state.placements[..]
                };
                for placement in placements {
                    let key = (placement.stack_id.clone(), placement.flag.clone());
                    let now = (placement.version_id.clone(), placement.held);
                    for status in simulated_steps(running.get(&key), &now) {
                        transitions.push((key.clone(), placement.version_id.clone(), *status));
                    }
                    wanted.insert(key, now);
                }
                for (key, (version, _)) in &running {
                    if !wanted.contains_key(key) {
                        for status in [ContainerStatus::Stopping, ContainerStatus::Terminated] {
                            transitions.push((key.clone(), version.clone(), status));
                        }
                    }
                }
                running = wanted;
                for ((stack_id, flag), version_id, status) in transitions {
                    let transition = Transition {
                        stack_id,
                        flag,
                        version_id,
                        status,
                        exit_code: (status == ContainerStatus::Terminated).then_some(0),
                        reason: None,
                        time_ms: flotilla_common::time::now_ms(),
                        commit: None,
                    };
                    if reports.send(transition).await.is_err() {
                        return;
                    }
                }
                loop {
                    tokio::select! {
                        changed = desired.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            break;
                        }
                        command = commands.recv(), if commands_open => match command {
                            Some(RuntimeCommand::Act(command)) => {
                                let statuses: &[ContainerStatus] = match command.action {
                                    Action::Restart => &[ContainerStatus::Restarting, ContainerStatus::Running],
                                    Action::Stop => &[ContainerStatus::Stopping, ContainerStatus::Terminated],
                                    Action::Start => &[ContainerStatus::Starting, ContainerStatus::Running],
                                };
                                let targets: Vec<((String, String), String)> = running
                                    .iter()
                                    .filter(|((stack, flag), _)| {
                                        *stack == command.stack_id && command.flag.as_ref().is_none_or(|f| f == flag)
                                    })
                                    .filter(|(_, (_, held))| !held)
                                    .map(|(key, (version, _))| (key.clone(), version.clone()))
                                    .collect();
                                for ((stack_id, flag), version_id) in targets {
                                    for status in statuses {
                                        let transition = Transition {
                                            stack_id: stack_id.clone(),
                                            flag: flag.clone(),
                                            version_id: version_id.clone(),
                                            status: *status,
                                            exit_code: None,
                                            reason: Some(format!("operator {:?}", command.action).to_lowercase()),
                                            time_ms: flotilla_common::time::now_ms(),
                        commit: None,
                                        };
                                        if reports.send(transition).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                            }
                            Some(RuntimeCommand::Logs { sink, .. }) => {
                                let _ = sink.send(Ok(b"the simulated runtime runs no containers and has no output\n".to_vec())).await;
                            }
                            Some(RuntimeCommand::Deadline(_)) => {}
                            Some(RuntimeCommand::Drain { done }) => {
                                draining = true;
                                let stopped = u32::try_from(running.len()).unwrap_or(u32::MAX);
                                for ((stack_id, flag), (version_id, _)) in running.drain() {
                                    for status in [ContainerStatus::Stopping, ContainerStatus::Terminated] {
                                        let transition = Transition {
                                            stack_id: stack_id.clone(),
                                            flag: flag.clone(),
                                            version_id: version_id.clone(),
                                            status,
                                            exit_code: (status == ContainerStatus::Terminated).then_some(0),
                                            reason: Some("drained".into()),
                                            time_ms: flotilla_common::time::now_ms(),
                                            commit: None,
                                        };
                                        if reports.send(transition).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                                let _ = done.send(stopped);
                            }
                            None => commands_open = false,
                        }
                    }
                }
            }
        })
    }
}

/// The statuses a simulated container goes through from `before` (version
/// and hold, `None`: not there) to `now`.
fn simulated_steps(
    before: Option<&(String, bool)>,
    now: &(String, bool),
) -> &'static [ContainerStatus] {
    use ContainerStatus as S;
    match (before, now.1) {
        (Some(before), _) if before == now => &[],
        (None, true) | (Some((_, true)), true) => &[S::Stopped],
        (Some((_, false)), true) => &[S::Stopping, S::Stopped],
        (None, false) | (Some((_, true)), false) => &[S::Starting, S::Running],
        (Some((_, false)), false) => &[S::Updating, S::Running],
    }
}
