//! Drains: what happens to an agent whose VM is going away (a cloud's spot
//! or preemption notice) or that an operator wants emptied.
//!
//! A drain only changes the agent's record; the scheduler does the rest on
//! its next pass: the agent takes no new placements, its placements are
//! started elsewhere (on-demand agents first), and each is released from
//! the draining agent once its replacement runs or the deadline passes.
//!
//! Every change here is one compare-and-swap on the agent record, and the
//! events are appended only by the writer whose change took, so a notice
//! that arrives twice (over REST while the link is down, then over the
//! link) is recorded once.

use crate::clock;
use crate::events::Event;
use crate::store::{AgentRecord, DrainReason, DrainRecord, Store, StoreResult};
use flotilla_common::wire::messages::CloudNotice;
use serde_json::json;

/// Where a notice came from, for the event.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// The fleet link (persisted and acked by the agent's lifecycle outbox).
    Link,
    /// `POST /v3/event/spot/shutdown`.
    Http,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Link => "quic",
            Source::Http => "http",
        }
    }
}

/// What applying a notice did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Recorded now (the agent's drain started or changed).
    Recorded,
    /// Seen before (same notice id, or the lifecycle id was applied).
    Duplicate,
    /// No such agent.
    UnknownAgent,
}

/// The stacks an agent runs now, so each stack's event list shows what
/// happened to its instances.
fn stacks_of(store: &Store, agent_id: &str) -> StoreResult<Vec<Option<String>>> {
    let mut stacks: Vec<Option<String>> = store
        .desired(agent_id)?
        .placements
        .iter()
        .map(|p| Some(p.stack_id.clone()))
        .collect();
    stacks.dedup();
    if stacks.is_empty() {
        stacks.push(None);
    }
    Ok(stacks)
}

fn append_per_stack(
    store: &Store,
    agent: &AgentRecord,
    event: &Event<'_>,
    time_ms: i64,
) -> StoreResult<()> {
    for stack in stacks_of(store, &agent.agent_id)? {
        store.record(event, stack.as_deref(), Some(&agent.instance_id), time_ms)?;
    }
    Ok(())
}

/// Applies a cloud notice to an agent. `lifecycle_id` is the agent's
/// lifecycle report id: applied once, whichever path brings it first.
pub fn apply_notice(
    store: &Store,
    agent_id: &str,
    notice: &CloudNotice,
    lifecycle_id: Option<u64>,
    source: Source,
    drain_on_rebalance: bool,
) -> StoreResult<Applied> {
    let now = clock::now_ms();
    let mut outcome = Applied::Duplicate;
    let updated = store.update_agent(agent_id, |agent| {
        outcome = Applied::Duplicate;
        if let (Some(id), Source::Link) = (lifecycle_id, source) {
            if id <= agent.lifecycle_id {
                return;
            }
            agent.lifecycle_id = id;
        }
        let seen = agent
            .drain
            .as_ref()
            .is_some_and(|d| d.notice_id.is_some() && d.notice_id == lifecycle_id);
        if seen {
            return;
        }
        outcome = Applied::Recorded;
        if !notice.is_final() {
            agent.at_risk_ms = Some(now);
            if !drain_on_rebalance || agent.drain.is_some() {
                return;
            }
        }
        let reason = if notice.is_final() {
            DrainReason::Spot
        } else {
            DrainReason::Rebalance
        };
        let since_ms = agent.drain.as_ref().map_or(now, |d| d.since_ms);
        agent.drain = Some(DrainRecord {
            reason,
            cloud: Some(notice.cloud.clone()),
            action: Some(notice.action.clone()),
            deadline_ms: notice.deadline_ms,
            since_ms,
            notice_id: lifecycle_id,
            drained_ms: None,
        });
    })?;
    let Some(agent) = updated else {
        return Ok(Applied::UnknownAgent);
    };
    if outcome == Applied::Recorded {
        let event = Event::CloudNotice {
            shutdown: notice.is_final(),
            agent_id: &agent.agent_id,
            cloud: &notice.cloud,
            action: &notice.action,
            deadline: notice.deadline_ms.map(clock::rfc3339_ms),
            notice_id: lifecycle_id,
            source: source.name(),
        };
        append_per_stack(store, &agent, &event, now)?;
        tracing::warn!(
            agent_id = %agent.agent_id,
            instance_id = %agent.instance_id,
            cloud = %notice.cloud,
            action = %notice.action,
            deadline_ms = ?notice.deadline_ms,
            source = source.name(),
            "cloud notice recorded"
        );
    }
    Ok(outcome)
}

/// Records that an agent stopped every container. From the agent (spot
/// drains, `lifecycle_id` set) or from the scheduler (operator drains).
pub fn mark_drained(
    store: &Store,
    agent_id: &str,
    stopped: Option<u32>,
    lifecycle_id: Option<u64>,
) -> StoreResult<Applied> {
    let now = clock::now_ms();
    let mut outcome = Applied::Duplicate;
    let updated = store.update_agent(agent_id, |agent| {
        outcome = Applied::Duplicate;
        if let Some(id) = lifecycle_id {
            if id <= agent.lifecycle_id {
                return;
            }
            agent.lifecycle_id = id;
        }
        let drain = agent.drain.get_or_insert(DrainRecord {
            reason: DrainReason::Spot,
            cloud: None,
            action: None,
            deadline_ms: None,
            since_ms: now,
            notice_id: None,
            drained_ms: None,
        });
        if drain.drained_ms.is_none() {
            drain.drained_ms = Some(now);
            outcome = Applied::Recorded;
        }
    })?;
    let Some(agent) = updated else {
        return Ok(Applied::UnknownAgent);
    };
    if outcome == Applied::Recorded {
        let event = Event::AgentDrained {
            agent_id: &agent.agent_id,
            stopped,
            reason: json!(agent.drain.as_ref().map(|d| d.reason)),
            source: if lifecycle_id.is_some() {
                "agent"
            } else {
                "controller"
            },
        };
        store.record(
            &event,
            agent.pin.as_ref().map(|p| p.stack_id.as_str()),
            Some(&agent.instance_id),
            now,
        )?;
        tracing::info!(agent_id = %agent.agent_id, stopped = ?stopped, "agent drained");
    }
    Ok(outcome)
}

/// Why an operator's drain request was refused.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("no agent {0}")]
    UnknownAgent(String),
    #[error(
        "agent {0} is being drained because its cloud is terminating the VM; that cannot be undone"
    )]
    CloudNotice(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Starts an operator's drain (or changes its deadline). Idempotent.
pub fn start(
    store: &Store,
    agent_id: &str,
    deadline_ms: Option<i64>,
) -> Result<AgentRecord, DrainError> {
    let now = clock::now_ms();
    let mut started = false;
    let agent = store
        .update_agent(agent_id, |agent| {
            started = false;
            match &mut agent.drain {
                Some(drain) => {
                    if drain.reason == DrainReason::Operator {
                        drain.deadline_ms = deadline_ms;
                    }
                }
                None => {
                    started = true;
                    agent.drain = Some(DrainRecord {
                        reason: DrainReason::Operator,
                        cloud: None,
                        action: None,
                        deadline_ms,
                        since_ms: now,
                        notice_id: None,
                        drained_ms: None,
                    });
                }
            }
        })?
        .ok_or_else(|| DrainError::UnknownAgent(agent_id.to_owned()))?;
    if started {
        let event = Event::AgentDrain {
            agent_id: &agent.agent_id,
            deadline: deadline_ms.map(clock::rfc3339_ms),
        };
        append_per_stack(store, &agent, &event, now)?;
        tracing::info!(agent_id = %agent.agent_id, deadline_ms = ?deadline_ms, "drain requested");
    }
    Ok(agent)
}

/// Ends an operator's (or a rebalance) drain: the agent takes placements
/// again. A drain for a termination notice can be undone only by an admin
/// (`admin`): a notice may be false (sent with a leaked token, or by a
/// cloud that changed its mind), and the admin must be able to say so.
pub fn undo(store: &Store, agent_id: &str, admin: bool) -> Result<AgentRecord, DrainError> {
    let now = clock::now_ms();
    let mut refused = false;
    let mut undone = false;
    let agent = store
        .update_agent(agent_id, |agent| {
            refused = false;
            undone = false;
            match agent.drain.as_ref().map(|d| d.reason) {
                Some(DrainReason::Spot) if !admin => refused = true,
                Some(_) => {
                    agent.drain = None;
                    agent.at_risk_ms = None;
                    undone = true;
                }
                None => {}
            }
        })?
        .ok_or_else(|| DrainError::UnknownAgent(agent_id.to_owned()))?;
    if refused {
        return Err(DrainError::CloudNotice(agent_id.to_owned()));
    }
    if undone {
        let event = Event::AgentUndrain {
            agent_id: &agent.agent_id,
        };
        append_per_stack(store, &agent, &event, now)?;
        tracing::info!(agent_id = %agent.agent_id, "drain undone");
    }
    Ok(agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(store: &Store) {
        store
            .insert_agent(&AgentRecord {
                instance_id: "i-1".into(),
                ..AgentRecord::for_test("ag-1")
            })
            .expect("insert");
    }

    fn notice(action: &str) -> CloudNotice {
        CloudNotice {
            cloud: "aws".into(),
            action: action.into(),
            deadline_ms: Some(1_000_000),
        }
    }

    fn events(store: &Store, kind: &str) -> usize {
        store
            .events(&crate::store::EventFilter {
                kind: Some(kind.into()),
                limit: 100,
                ..Default::default()
            })
            .expect("events")
            .len()
    }

    #[test]
    fn a_notice_by_rest_then_by_the_link_is_recorded_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1 << 20).expect("store");
        agent(&store);
        let n = notice("terminate");
        let first = apply_notice(&store, "ag-1", &n, Some(3), Source::Http, false);
        assert_eq!(first.expect("apply"), Applied::Recorded);
        let again = apply_notice(&store, "ag-1", &n, Some(3), Source::Link, false);
        assert_eq!(again.expect("apply"), Applied::Duplicate);
        let replay = apply_notice(&store, "ag-1", &n, Some(3), Source::Link, false);
        assert_eq!(replay.expect("apply"), Applied::Duplicate);
        assert_eq!(events(&store, "spot.shutdown"), 1);
        let record = store.agent("ag-1").expect("read").expect("agent");
        let drain = record.drain.expect("draining");
        assert_eq!(drain.reason, DrainReason::Spot);
        assert_eq!(drain.deadline_ms, Some(1_000_000));
        assert_eq!(record.lifecycle_id, 3);
        assert!(matches!(
            undo(&store, "ag-1", false),
            Err(DrainError::CloudNotice(_))
        ));
        assert_eq!(
            mark_drained(&store, "ag-1", Some(2), Some(4)).expect("drained"),
            Applied::Recorded
        );
        assert_eq!(
            mark_drained(&store, "ag-1", Some(2), Some(4)).expect("drained"),
            Applied::Duplicate
        );
        assert_eq!(events(&store, "agent.drained"), 1);
        assert_eq!(
            apply_notice(&store, "ag-9", &n, None, Source::Http, false).expect("apply"),
            Applied::UnknownAgent
        );
    }

    #[test]
    fn an_admin_undoes_a_cloud_notice_drain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1 << 20).expect("store");
        agent(&store);
        apply_notice(
            &store,
            "ag-1",
            &notice("terminate"),
            None,
            Source::Http,
            false,
        )
        .expect("apply");
        assert!(matches!(
            undo(&store, "ag-1", false),
            Err(DrainError::CloudNotice(_))
        ));
        let record = undo(&store, "ag-1", true).expect("an admin undoes it");
        assert!(record.drain.is_none());
        assert_eq!(events(&store, "agent.undrain"), 1);
    }

    #[test]
    fn rebalance_marks_risk_and_drains_only_when_configured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1 << 20).expect("store");
        agent(&store);
        apply_notice(
            &store,
            "ag-1",
            &notice("rebalance"),
            Some(1),
            Source::Link,
            false,
        )
        .expect("apply");
        let record = store.agent("ag-1").expect("read").expect("agent");
        assert!(record.at_risk_ms.is_some());
        assert!(record.drain.is_none());
        apply_notice(
            &store,
            "ag-1",
            &notice("rebalance"),
            Some(2),
            Source::Link,
            true,
        )
        .expect("apply");
        let record = store.agent("ag-1").expect("read").expect("agent");
        assert_eq!(record.drain.map(|d| d.reason), Some(DrainReason::Rebalance));
        undo(&store, "ag-1", false).expect("a rebalance drain can be undone");
        let record = store.agent("ag-1").expect("read").expect("agent");
        assert!(record.drain.is_none());
        start(&store, "ag-1", None).expect("drain");
        start(&store, "ag-1", Some(5)).expect("drain again");
        assert_eq!(events(&store, "agent.drain"), 1);
        let record = store.agent("ag-1").expect("read").expect("agent");
        assert_eq!(record.drain.and_then(|d| d.deadline_ms), Some(5));
    }
}
