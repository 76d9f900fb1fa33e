//! The scheduler: places every stack's configurations on agents, turns the
//! placements into each agent's numbered desired state, hands new desired
//! states to the fleet link, and derives each stack's status.
//!
//! It is level-triggered and idempotent (in the manner of a Kubernetes
//! reconciler): each pass reads the whole state and writes only what
//! differs, so a missed nudge costs at most one tick. REST handlers and
//! sessions only nudge it; they never wait for it.

pub mod placement;
pub mod status;

use crate::clock;
use crate::fleet::Fleet;
use crate::store::{
    AgentRecord, AgentState, DesiredRecord, InstanceStatusRecord, PlacementRecord, StackRecord,
    StackStatus, StoreResult,
};
use crate::template::COMPUTED;
use placement::{Candidate, Slot, Want};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// How often a pass runs without a nudge.
const TICK: Duration = Duration::from_secs(5);

/// A stack with its latest template body.
struct Loaded {
    stack: StackRecord,
    body: Value,
    version_created_ms: i64,
}

/// What one configuration wants, read from a template body.
fn wants_of(stack_id: &str, body: &Value) -> Vec<(Want, String)> {
    body.get("configurations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|config| {
            let flag = config.get("flag")?.as_str()?.to_owned();
            let count = config.pointer("/provision/instance_count")?.as_u64()?;
            let instance_type = config
                .pointer("/provision/instance_type")
                .and_then(Value::as_str)
                .filter(|t| *t != COMPUTED && !t.is_empty())
                .map(str::to_owned);
            let spec = config
                .get("container")
                .map_or_else(|| "{}".to_owned(), Value::to_string);
            Some((
                Want {
                    stack_id: stack_id.to_owned(),
                    flag,
                    count: usize::try_from(count).unwrap_or(usize::MAX),
                    instance_type,
                },
                spec,
            ))
        })
        .collect()
}

/// Whether an agent counts for placement, from its state and how long it
/// has been in it.
fn candidate(fleet: &Fleet, agent: &AgentRecord, now_ms: i64) -> Candidate {
    let connected = fleet.registry.is_connected(&agent.agent_id);
    let replace_ms = i64::try_from(fleet.settings.replace_after.as_millis()).unwrap_or(i64::MAX);
    let lost_recently =
        agent.state == AgentState::Lost && now_ms - agent.state_since_ms < replace_ms;
    Candidate {
        agent_id: agent.agent_id.clone(),
        pin: agent.pin.clone(),
        labels: agent.labels.clone(),
        eligible: connected || lost_recently,
        accepting: connected,
    }
}

/// Whether a reported container may still exist on an agent that can
/// still remove it: its last status is not a final one.
fn container_may_exist(
    record: &InstanceStatusRecord,
    eligible: &std::collections::HashSet<&str>,
) -> bool {
    let Some(agent) = record.agent_id.as_deref() else {
        return false;
    };
    let last = record
        .status
        .parse::<flotilla_common::status::ContainerStatus>()
        .ok();
    let finished = matches!(
        last,
        Some(
            flotilla_common::status::ContainerStatus::Terminated
                | flotilla_common::status::ContainerStatus::StartFailure
                | flotilla_common::status::ContainerStatus::AppCrashed
        )
    );
    !finished && eligible.contains(agent)
}

/// One full pass, then a flush when anything changed. The pass itself is
/// synchronous store work, so it runs on the blocking pool and never holds
/// up the sessions' tasks.
pub async fn pass(fleet: &Arc<Fleet>) -> StoreResult<usize> {
    let worker = fleet.clone();
    let changed = match tokio::task::spawn_blocking(move || pass_sync(&worker)).await {
        Ok(result) => result?,
        Err(err) => {
            tracing::error!(error = %err, "scheduler pass panicked");
            return Ok(0);
        }
    };
    if changed > 0 {
        fleet.store.flush().await?;
    }
    Ok(changed)
}

fn pass_sync(fleet: &Fleet) -> StoreResult<usize> {
    let _span = tracing::debug_span!("schedule").entered();
    let store = &fleet.store;
    let now = clock::now_ms();
    let mut changed = 0;

    let mut stacks = Vec::new();
    for stack in store.stacks()? {
        let version = store.version_by_seq(&stack.stack_id, stack.latest_seq)?;
        let (body, created) = version
            .map(|v| {
                (
                    serde_json::from_str(&v.body).unwrap_or(Value::Null),
                    v.created_ms,
                )
            })
            .unwrap_or((Value::Null, now));
        stacks.push(Loaded {
            stack,
            body,
            version_created_ms: created,
        });
    }
    let agents: Vec<AgentRecord> = store
        .agents()?
        .into_iter()
        .filter(|a| a.state != AgentState::Revoked)
        .collect();
    let candidates: Vec<Candidate> = agents.iter().map(|a| candidate(fleet, a, now)).collect();
    let eligible: std::collections::HashSet<&str> = candidates
        .iter()
        .filter(|c| c.eligible)
        .map(|c| c.agent_id.as_str())
        .collect();

    // Placement.
    let mut wants = Vec::new();
    let mut specs: HashMap<Slot, (String, String)> = HashMap::new();
    for loaded in &stacks {
        if loaded.stack.stack_status.is_deleting() {
            continue;
        }
        for (want, spec) in wants_of(&loaded.stack.stack_id, &loaded.body) {
            specs.insert(
                (want.stack_id.clone(), want.flag.clone()),
                (loaded.stack.latest_version_id.clone(), spec),
            );
            wants.push(want);
        }
    }
    let current: HashMap<Slot, Vec<String>> = store.assignments()?.into_iter().collect();
    let placed = placement::place(&wants, &candidates, &current);
    for (slot, agents_now) in &placed {
        let differs = match current.get(slot) {
            Some(before) => before != agents_now,
            None => !agents_now.is_empty(),
        };
        if differs {
            store.put_assignment(&slot.0, &slot.1, agents_now)?;
            changed += 1;
        }
    }
    for slot in current.keys().filter(|slot| !placed.contains_key(*slot)) {
        store.put_assignment(&slot.0, &slot.1, &[])?;
        changed += 1;
    }

    // Desired state per agent.
    let gone: BTreeSet<&str> = stacks
        .iter()
        .filter(|l| l.stack.stack_status == StackStatus::DeleteComplete)
        .map(|l| l.stack.stack_id.as_str())
        .collect();
    let mut per_agent: HashMap<&str, Vec<PlacementRecord>> = HashMap::new();
    for (slot, agent_ids) in &placed {
        let Some((version_id, spec)) = specs.get(slot) else {
            continue;
        };
        for agent_id in agent_ids {
            per_agent
                .entry(agent_id.as_str())
                .or_default()
                .push(PlacementRecord {
                    stack_id: slot.0.clone(),
                    flag: slot.1.clone(),
                    version_id: version_id.clone(),
                    spec_json: spec.clone(),
                });
        }
    }
    let mut held: HashMap<String, bool> = HashMap::new();
    for (agent, cand) in agents.iter().zip(&candidates) {
        let old = store.desired(&agent.agent_id)?;
        let mut placements = per_agent
            .remove(agent.agent_id.as_str())
            .unwrap_or_default();
        placements.sort();
        let mut history: BTreeSet<String> = old
            .history
            .iter()
            .filter(|s| !gone.contains(s.as_str()))
            .cloned()
            .collect();
        history.extend(placements.iter().map(|p| p.stack_id.clone()));
        let new = DesiredRecord {
            generation: if placements == old.placements {
                old.generation
            } else {
                old.generation + 1
            },
            placements,
            history,
        };
        if new != old {
            store.put_desired(&agent.agent_id, &new)?;
            changed += 1;
            if new.generation != old.generation {
                tracing::debug!(agent_id = %agent.agent_id, generation = new.generation, "desired state changed");
                fleet.registry.push(&agent.agent_id, Arc::new(new.clone()));
            }
        }
        // Stacks this agent may still run containers of.
        if cand.eligible {
            let acked_current = agent.acked_generation >= new.generation;
            let holding: Box<dyn Iterator<Item = &String>> = if acked_current {
                Box::new(new.placements.iter().map(|p| &p.stack_id))
            } else {
                Box::new(new.history.iter())
            };
            for stack in holding {
                held.insert(stack.clone(), true);
            }
        }
    }

    // Stack status.
    for loaded in &stacks {
        let stack = &loaded.stack;
        let wants: Vec<Want> = wants_of(&stack.stack_id, &loaded.body)
            .into_iter()
            .map(|(w, _)| w)
            .collect();
        let assigned: HashMap<String, Vec<String>> = placed
            .iter()
            .filter(|(slot, _)| slot.0 == stack.stack_id)
            .map(|(slot, agents)| (slot.1.clone(), agents.clone()))
            .collect();
        let records: Vec<InstanceStatusRecord> =
            if stack.stack_status == StackStatus::DeleteComplete {
                Vec::new()
            } else {
                store.instance_statuses(&stack.stack_id)?
            };
        let reports: HashMap<(String, String), &InstanceStatusRecord> = records
            .iter()
            .filter_map(|r| Some(((r.agent_id.clone()?, r.flag.clone()?), r)))
            .collect();
        let observed = status::Observed {
            status: stack.stack_status,
            version_id: &stack.latest_version_id,
            version_age: Duration::from_millis(
                u64::try_from(now - loaded.version_created_ms).unwrap_or(0),
            ),
            wants: &wants,
            assigned: &assigned,
            reports: &reports,
            still_held: held.contains_key(&stack.stack_id)
                || records.iter().any(|r| container_may_exist(r, &eligible)),
            placement_timeout: fleet.settings.placement_timeout,
        };
        let Some((next, reason)) = status::next(&observed) else {
            continue;
        };
        if next == stack.stack_status && reason == stack.status_reason {
            continue;
        }
        // Only if no operator changed the stack since it was read.
        if !store.transition_stack_status(
            &stack.stack_id,
            stack.stack_status,
            next,
            reason.clone(),
            now,
        )? {
            continue;
        }
        store.append_event(
            "stack.status",
            Some(&stack.stack_id),
            None,
            clock::rfc3339_ms(now),
            json!({ "from": stack.stack_status, "to": next, "reason": reason }),
        )?;
        tracing::info!(stack_id = %stack.stack_id, from = ?stack.stack_status, to = ?next, reason = ?reason, "stack status changed");
        changed += 1;
    }
    Ok(changed)
}

/// Runs passes on every nudge and every [`TICK`] until the process ends.
pub async fn run(fleet: Arc<Fleet>) {
    loop {
        let started = std::time::Instant::now();
        let result = pass(&fleet).await;
        match result {
            Ok(changed) => tracing::debug!(
                changed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "scheduler pass"
            ),
            Err(err) => tracing::error!(error = %err, "scheduler pass failed"),
        }
        tokio::select! {
            // Nudges that arrive during a pass leave one permit: they are
            // served together by the next pass.
            () = fleet.nudge.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
}
