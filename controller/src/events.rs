//! Every kind of event the log records, as one typed enum: each `type`
//! has one variant, so its data has one shape whichever code path records
//! it, and nothing appends an event the enum does not name
//! (`Store::record` is the only way in). Subscribers (the event list, the
//! stream, webhooks) read the `type` and `data` these produce.

use crate::stacks::Change;
use crate::store::StackStatus;
use serde_json::{json, Value};

/// Something that happened.
#[derive(Debug)]
pub enum Event<'a> {
    /// A new version (`stack.created`, `stack.updated`, `stack.scaled`,
    /// `stack.rolled_back`, `stack.config_changed`).
    Version {
        change: &'a Change,
        version_id: &'a str,
        task_id: &'a str,
    },
    /// `stack.deleting`.
    StackDeleting { task_id: &'a str },
    /// `stack.stopped` or `stack.started`.
    StackHold {
        stopped: bool,
        version_id: &'a str,
        task_id: &'a str,
    },
    /// `stack.status`: the derived status moved.
    StackStatus {
        from: StackStatus,
        to: StackStatus,
        reason: Option<&'a str>,
    },
    /// `placement.moved`: a configuration's agents changed, and why.
    PlacementMoved {
        flag: &'a str,
        from: &'a [String],
        to: &'a [String],
        reason: &'a str,
    },
    /// `container.status`: the data `crate::reports::write` made (the one
    /// place a status report's shape is decided).
    ContainerStatus(Value),
    /// The original alm-agent's own status (`agent.status`).
    AlmAgentStatus {
        status: &'a str,
        message: Option<&'a str>,
        agent_id: Option<&'a str>,
    },
    /// `agent.enrolled`.
    AgentEnrolled {
        agent_id: &'a str,
        join_token_id: &'a str,
        pool: &'a str,
    },
    /// `agent.connected` or `agent.lost`.
    AgentLink { connected: bool, agent_id: &'a str },
    /// `agent.revoked`.
    AgentRevoked { agent_id: &'a str, by: &'a str },
    /// `agent.drain`: an operator asked.
    AgentDrain {
        agent_id: &'a str,
        deadline: Option<String>,
    },
    /// `agent.undrain`.
    AgentUndrain { agent_id: &'a str },
    /// `agent.drained`: the agent stopped its containers.
    AgentDrained {
        agent_id: &'a str,
        stopped: Option<u32>,
        reason: Value,
        source: &'static str,
    },
    /// `spot.shutdown` or `spot.rebalance` from an enrolled agent's cloud.
    CloudNotice {
        shutdown: bool,
        agent_id: &'a str,
        cloud: &'a str,
        action: &'a str,
        deadline: Option<String>,
        notice_id: Option<u64>,
        source: &'static str,
    },
    /// `spot.shutdown` over REST for an instance that is no enrolled agent
    /// (recorded only).
    SpotNoticeRecorded,
    /// `pool.created`, `pool.updated` or `pool.deleted`.
    Pool {
        kind: PoolChange,
        pool: &'a str,
        by: &'a str,
    },
    /// `audit`: an operator's action ([`crate::audit`]).
    Audit(Value),
}

/// What happened to a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolChange {
    Created,
    Updated,
    Deleted,
}

impl Event<'_> {
    /// The event's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Version { change, .. } => change.kind(),
            Event::StackDeleting { .. } => "stack.deleting",
            Event::StackHold { stopped: true, .. } => "stack.stopped",
            Event::StackHold { stopped: false, .. } => "stack.started",
            Event::StackStatus { .. } => "stack.status",
            Event::PlacementMoved { .. } => "placement.moved",
            Event::ContainerStatus(_) => crate::reports::CONTAINER_STATUS,
            Event::AlmAgentStatus { .. } => "agent.status",
            Event::AgentEnrolled { .. } => "agent.enrolled",
            Event::AgentLink {
                connected: true, ..
            } => "agent.connected",
            Event::AgentLink {
                connected: false, ..
            } => "agent.lost",
            Event::AgentRevoked { .. } => "agent.revoked",
            Event::AgentDrain { .. } => "agent.drain",
            Event::AgentUndrain { .. } => "agent.undrain",
            Event::AgentDrained { .. } => "agent.drained",
            Event::CloudNotice { shutdown: true, .. } | Event::SpotNoticeRecorded => {
                "spot.shutdown"
            }
            Event::CloudNotice {
                shutdown: false, ..
            } => "spot.rebalance",
            Event::Pool {
                kind: PoolChange::Created,
                ..
            } => "pool.created",
            Event::Pool {
                kind: PoolChange::Updated,
                ..
            } => "pool.updated",
            Event::Pool {
                kind: PoolChange::Deleted,
                ..
            } => "pool.deleted",
            Event::Audit(_) => crate::audit::KIND,
        }
    }

    /// The event's `data`.
    pub fn data(&self) -> Value {
        match self {
            Event::Version {
                change,
                version_id,
                task_id,
            } => {
                let mut data = change.data(version_id);
                if let Some(data) = data.as_object_mut() {
                    data.insert("task_id".into(), json!(task_id));
                }
                data
            }
            Event::StackDeleting { task_id } => json!({ "task_id": task_id }),
            Event::StackHold {
                version_id,
                task_id,
                ..
            } => json!({ "version_id": version_id, "task_id": task_id }),
            Event::StackStatus { from, to, reason } => {
                json!({ "from": from, "to": to, "reason": reason })
            }
            Event::PlacementMoved {
                flag,
                from,
                to,
                reason,
            } => json!({ "flag": flag, "from": from, "to": to, "reason": reason }),
            Event::ContainerStatus(data) | Event::Audit(data) => data.clone(),
            Event::AlmAgentStatus {
                status,
                message,
                agent_id,
            } => {
                json!({ "status": status, "message": message, "agent_id": agent_id, "source": "alm-agent" })
            }
            Event::AgentEnrolled {
                agent_id,
                join_token_id,
                pool,
            } => json!({ "agent_id": agent_id, "join_token_id": join_token_id, "pool": pool }),
            Event::AgentLink { agent_id, .. } | Event::AgentUndrain { agent_id } => {
                json!({ "agent_id": agent_id })
            }
            Event::AgentRevoked { agent_id, by } => json!({ "agent_id": agent_id, "by": by }),
            Event::AgentDrain { agent_id, deadline } => {
                json!({ "agent_id": agent_id, "deadline": deadline })
            }
            Event::AgentDrained {
                agent_id,
                stopped,
                reason,
                source,
            } => {
                json!({ "agent_id": agent_id, "stopped": stopped, "reason": reason, "source": source })
            }
            Event::CloudNotice {
                agent_id,
                cloud,
                action,
                deadline,
                notice_id,
                source,
                ..
            } => json!({
                "agent_id": agent_id,
                "cloud": cloud,
                "action": action,
                "deadline": deadline,
                "notice_id": notice_id,
                "source": source,
            }),
            Event::SpotNoticeRecorded => json!({ "source": "http" }),
            Event::Pool { pool, by, .. } => json!({ "pool": pool, "by": by }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_shapes_table() {
        let change = Change::Scaled(vec![("Web01".into(), 3)]);
        let to = vec!["ag-2".to_owned()];
        for (event, kind, data) in [
            (
                Event::Version {
                    change: &change,
                    version_id: "v2",
                    task_id: "t",
                },
                "stack.scaled",
                json!({"version_id": "v2", "formation": [{"flag": "Web01", "instance_count": 3}], "task_id": "t"}),
            ),
            (
                Event::StackDeleting { task_id: "t" },
                "stack.deleting",
                json!({"task_id": "t"}),
            ),
            (
                Event::StackHold {
                    stopped: true,
                    version_id: "v",
                    task_id: "t",
                },
                "stack.stopped",
                json!({"version_id": "v", "task_id": "t"}),
            ),
            (
                Event::StackStatus {
                    from: StackStatus::UpdateInProgress,
                    to: StackStatus::UpdateComplete,
                    reason: None,
                },
                "stack.status",
                json!({"from": "UPDATE_IN_PROGRESS", "to": "UPDATE_COMPLETE", "reason": null}),
            ),
            (
                Event::PlacementMoved {
                    flag: "Web01",
                    from: &[],
                    to: &to,
                    reason: "lost",
                },
                "placement.moved",
                json!({"flag": "Web01", "from": [], "to": ["ag-2"], "reason": "lost"}),
            ),
            (
                Event::AgentLink {
                    connected: false,
                    agent_id: "ag-1",
                },
                "agent.lost",
                json!({"agent_id": "ag-1"}),
            ),
            (
                Event::SpotNoticeRecorded,
                "spot.shutdown",
                json!({"source": "http"}),
            ),
            (
                Event::Pool {
                    kind: PoolChange::Deleted,
                    pool: "gpu",
                    by: "admin",
                },
                "pool.deleted",
                json!({"pool": "gpu", "by": "admin"}),
            ),
        ] {
            assert_eq!(event.kind(), kind);
            assert_eq!(event.data(), data, "{kind}");
        }
    }
}
