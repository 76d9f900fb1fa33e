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
    AgentRecord, AgentState, DesiredRecord, DrainReason, DrainRecord, InstanceStatusRecord,
    PlacementRecord, StackRecord, StackStatus, StoreResult,
};
use crate::template::COMPUTED;
use placement::{Candidate, Slot, Want};
use serde_json::Value;
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
    /// The pool of each configuration (by flag) of the latest version.
    pools: std::collections::BTreeMap<String, String>,
}

/// What one configuration wants, read from a template body.
fn wants_of(loaded: &Loaded) -> Vec<(Want, String)> {
    let stack_id = loaded.stack.stack_id.as_str();
    let body = &loaded.body;
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
                    count: usize::try_from(count).unwrap_or(usize::MAX),
                    instance_type,
                    pool: loaded
                        .pools
                        .get(&flag)
                        .map_or(crate::store::DEFAULT_POOL, String::as_str)
                        .to_owned(),
                    flag,
                    // The pass measures the whole placement.
                    bytes: spec.len(),
                },
                spec,
            ))
        })
        .collect()
}

/// What one agent's desired state may hold: the wire's bounds, and one
/// placement per frame.
fn wire_room(max_frame: usize) -> placement::Room {
    use flotilla_common::wire::bounds;
    placement::Room {
        parts: usize::try_from(bounds::MAX_DESIRED_PARTS).unwrap_or(usize::MAX),
        bytes: bounds::MAX_DESIRED_BYTES,
        part_bytes: max_frame.saturating_sub(bounds::FRAME_SLACK),
    }
}

/// Whether an agent counts for placement, from its state and how long it
/// has been in it.
fn candidate(
    fleet: &Fleet,
    connected: &std::collections::HashSet<String>,
    agent: &AgentRecord,
    now_ms: i64,
) -> Candidate {
    let connected = connected.contains(&agent.agent_id);
    let replace_ms = i64::try_from(fleet.settings.replace_after.as_millis()).unwrap_or(i64::MAX);
    let lost_recently =
        agent.state == AgentState::Lost && now_ms - agent.state_since_ms < replace_ms;
    let draining = agent.drain.is_some();
    Candidate {
        agent_id: agent.agent_id.clone(),
        pin: agent.pin.clone(),
        pool: agent.pool.clone(),
        labels: agent.labels.clone(),
        eligible: connected || lost_recently,
        accepting: connected && !draining,
        draining,
        at_risk: agent.at_risk_ms.is_some(),
    }
}

/// Whether a container an agent reported may still exist: its last status
/// is not a final one.
fn unfinished(record: &InstanceStatusRecord) -> bool {
    let last = record
        .status
        .parse::<flotilla_common::status::ContainerStatus>()
        .ok();
    !matches!(
        last,
        Some(
            flotilla_common::status::ContainerStatus::Terminated
                | flotilla_common::status::ContainerStatus::StartFailure
                | flotilla_common::status::ContainerStatus::AppCrashed
        )
    )
}

/// Whether a draining agent still runs `leaving` (a placement it no longer
/// has an assignment for): until the slot's replacements all run the
/// stack's latest version, or the drain's deadline passes, or nobody
/// wants the slot any more.
fn keep_leaving(
    leaving: &PlacementRecord,
    drain: &DrainRecord,
    now_ms: i64,
    wanted: &HashMap<Slot, usize>,
    placed: &HashMap<Slot, Vec<String>>,
    latest: &HashMap<&str, &str>,
    records: &HashMap<String, Vec<InstanceStatusRecord>>,
) -> bool {
    let slot = (leaving.stack_id.clone(), leaving.flag.clone());
    let Some(&count) = wanted.get(&slot) else {
        return false;
    };
    if count == 0 || drain.deadline_ms.is_some_and(|deadline| now_ms >= deadline) {
        return false;
    }
    let version = latest.get(leaving.stack_id.as_str()).copied();
    let assigned = placed.get(&slot).map(Vec::as_slice).unwrap_or_default();
    let running = records
        .get(&leaving.stack_id)
        .into_iter()
        .flatten()
        .filter(|r| {
            r.flag.as_deref() == Some(leaving.flag.as_str())
                && r.agent_id.as_ref().is_some_and(|a| assigned.contains(a))
                && r.version_id.as_deref() == version
                && r.status == flotilla_common::status::ContainerStatus::Running.to_string()
        })
        .count();
    running < count
}

/// Whether an agent's acknowledgement of `generation` can change what a
/// pass decides, so a pass is due: only when it lets a drain finish or
/// shows containers gone (a stack this agent ran and runs no more, which a
/// deletion or a move waits for). A fleet-wide update's ten thousand acks
/// would otherwise each start a pass while the next ones arrive.
pub fn ack_matters(agent: &AgentRecord, desired: &DesiredRecord, generation: u64) -> bool {
    if generation < desired.generation {
        return false;
    }
    let left_a_stack = desired
        .history
        .iter()
        .any(|stack| !desired.placements.iter().any(|p| &p.stack_id == stack));
    agent.drain.is_some() || left_a_stack
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
    unfinished(record) && eligible.contains(agent)
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
    let started = std::time::Instant::now();
    let store = &fleet.store;
    let now = clock::now_ms();
    let mut changed = 0;

    let mut stacks = Vec::new();
    for stack in store.stacks()? {
        let version = store.version_by_seq(&stack.stack_id, stack.latest_seq)?;
        let (body, created, pools) = version
            .map(|v| {
                (
                    serde_json::from_str(&v.body).unwrap_or(Value::Null),
                    v.created_ms,
                    v.pools,
                )
            })
            .unwrap_or((Value::Null, now, Default::default()));
        stacks.push(Loaded {
            stack,
            body,
            version_created_ms: created,
            pools,
        });
    }
    fleet.stack_tokens.replace(
        stacks
            .iter()
            .map(|l| (l.stack.stack_id.clone(), l.stack.auth_token.clone()))
            .collect(),
    );
    let agents: Vec<Arc<AgentRecord>> = store
        .agents()?
        .into_iter()
        .filter(|a| a.state != AgentState::Revoked)
        .collect();
    let connected = fleet.registry.connected();
    let candidates: Vec<Candidate> = agents
        .iter()
        .map(|a| candidate(fleet, &connected, a, now))
        .collect();
    let eligible: std::collections::HashSet<&str> = candidates
        .iter()
        .filter(|c| c.eligible)
        .map(|c| c.agent_id.as_str())
        .collect();

    // Placement.
    let mut wants = Vec::new();
    let mut specs: HashMap<Slot, Arc<PlacementRecord>> = HashMap::new();
    let policies: HashMap<String, flotilla_common::policy::Policy> = store
        .pools()?
        .into_iter()
        .map(|p| (p.name, p.policy))
        .collect();
    let scoped_since = store.pools_since_ms()?;
    let room = wire_room(fleet.settings.max_frame);
    for loaded in &stacks {
        if loaded.stack.stack_status.is_deleting() {
            continue;
        }
        for (mut want, spec) in wants_of(loaded) {
            let record = PlacementRecord {
                stack_id: want.stack_id.clone(),
                flag: want.flag.clone(),
                version_id: loaded.stack.latest_version_id.clone(),
                spec_json: spec,
                policy: policies.get(&want.pool).cloned().unwrap_or_default(),
                pool: want.pool.clone(),
                scoped_volumes: loaded.stack.create_time_ms >= scoped_since,
                held: loaded.stack.stopped,
            };
            want.bytes = record.text_bytes(&loaded.stack.auth_token);
            if want.bytes > room.part_bytes {
                tracing::warn!(stack_id = %want.stack_id, flag = %want.flag, bytes = want.bytes, max = room.part_bytes, "a placement too large for one frame is not placed");
            }
            // The stored copy when unchanged: agents' states then compare by address.
            let record = store.shared_placement(record)?;
            specs.insert((want.stack_id.clone(), want.flag.clone()), record);
            wants.push(want);
        }
    }
    let current: HashMap<Slot, Vec<String>> = store.assignments()?.into_iter().collect();
    let placed = placement::place(&wants, &candidates, &current, room);
    let by_id: HashMap<&str, (&AgentRecord, &Candidate)> = agents
        .iter()
        .zip(&candidates)
        .map(|(a, c)| (a.agent_id.as_str(), (&**a, c)))
        .collect();
    // Stacks whose instances are moving off drained or lost agents, with why.
    let mut moving: HashMap<String, String> = HashMap::new();
    for (slot, agents_now) in &placed {
        let differs = match current.get(slot) {
            Some(before) => before != agents_now,
            None => !agents_now.is_empty(),
        };
        if differs {
            store.put_assignment(&slot.0, &slot.1, agents_now)?;
            changed += 1;
            let before = current.get(slot).map(Vec::as_slice).unwrap_or_default();
            if let Some(reason) = moved(slot, before, agents_now, &by_id) {
                let event = crate::events::Event::PlacementMoved {
                    flag: &slot.1,
                    from: before,
                    to: agents_now,
                    reason: &reason,
                };
                store.record(&event, Some(&slot.0), None, now)?;
                tracing::info!(stack_id = %slot.0, flag = %slot.1, from = ?before, to = ?agents_now, reason = %reason, "placement moved");
                moving.insert(slot.0.clone(), reason);
            }
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
    let mut per_agent: HashMap<&str, Vec<Arc<PlacementRecord>>> = HashMap::new();
    for (slot, agent_ids) in &placed {
        let Some(placement) = specs.get(slot) else {
            continue;
        };
        for agent_id in agent_ids {
            per_agent
                .entry(agent_id.as_str())
                .or_default()
                .push(placement.clone());
        }
    }
    let wanted: HashMap<Slot, usize> = wants
        .iter()
        .map(|w| ((w.stack_id.clone(), w.flag.clone()), w.count))
        .collect();
    let latest: HashMap<&str, &str> = stacks
        .iter()
        .map(|l| {
            (
                l.stack.stack_id.as_str(),
                l.stack.latest_version_id.as_str(),
            )
        })
        .collect();
    let mut records: HashMap<String, Vec<InstanceStatusRecord>> = HashMap::new();
    for loaded in &stacks {
        if loaded.stack.stack_status != StackStatus::DeleteComplete {
            let id = &loaded.stack.stack_id;
            records.insert(id.clone(), store.instance_statuses(id)?);
        }
    }
    let mut held: HashMap<String, bool> = HashMap::new();
    // Changed desired states, and the agents among them with a new
    // generation to push (the others changed only their history).
    let mut new_states: Vec<(String, Arc<DesiredRecord>)> = Vec::new();
    let mut bumped: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for (agent, cand) in agents.iter().zip(&candidates) {
        let old = store.desired(&agent.agent_id)?;
        let mut placements = per_agent
            .remove(agent.agent_id.as_str())
            .unwrap_or_default();
        // A draining agent keeps running what it is leaving until the
        // replacement runs (make before break).
        if let (Some(drain), true) = (&agent.drain, cand.eligible) {
            for leaving in &old.placements {
                let slot = (leaving.stack_id.clone(), leaving.flag.clone());
                let still_assigned = placed
                    .get(&slot)
                    .is_some_and(|ids| ids.contains(&agent.agent_id));
                if !still_assigned
                    && keep_leaving(leaving, drain, now, &wanted, &placed, &latest, &records)
                {
                    placements.push(leaving.clone());
                }
            }
        }
        placements.sort();
        let mut history: BTreeSet<String> = old
            .history
            .iter()
            .filter(|s| !gone.contains(s.as_str()))
            .cloned()
            .collect();
        history.extend(placements.iter().map(|p| p.stack_id.clone()));
        let new = Arc::new(DesiredRecord {
            generation: if placements == old.placements {
                old.generation
            } else {
                old.generation + 1
            },
            placements,
            history,
        });
        if new != old {
            if new.generation != old.generation {
                bumped.insert(agent.agent_id.as_str());
            }
            new_states.push((agent.agent_id.clone(), new.clone()));
        }
        if let Some(drain) = &agent.drain {
            let emptied = drain.drained_ms.is_none()
                && drain.reason != DrainReason::Spot
                && new.placements.is_empty()
                && agent.acked_generation >= new.generation
                && !records.values().flatten().any(|r| {
                    r.agent_id.as_deref() == Some(agent.agent_id.as_str()) && unfinished(r)
                });
            if emptied
                && crate::fleet::drain::mark_drained(store, &agent.agent_id, None, None)?
                    == crate::fleet::drain::Applied::Recorded
            {
                changed += 1;
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

    changed += new_states.len();
    store.put_desired(&new_states, |all| {
        let pushed = all
            .iter()
            .filter(|(agent_id, _)| bumped.contains(agent_id.as_str()));
        fleet.registry.push_all(pushed);
    })?;
    tracing::debug!(
        pushed = bumped.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "desired states pushed"
    );

    // Stack status.
    for loaded in &stacks {
        let stack = &loaded.stack;
        let wants: Vec<Want> = wants_of(loaded).into_iter().map(|(w, _)| w).collect();
        let assigned: HashMap<String, Vec<String>> = placed
            .iter()
            .filter(|(slot, _)| slot.0 == stack.stack_id)
            .map(|(slot, agents)| (slot.1.clone(), agents.clone()))
            .collect();
        let records: &[InstanceStatusRecord] = records
            .get(&stack.stack_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
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
            reason: stack.status_reason.as_deref(),
            stopped: stack.stopped,
        };
        let decided = match (status::next(&observed), moving.get(&stack.stack_id)) {
            (None, Some(why)) if stack.stack_status.is_complete() => {
                Some((StackStatus::UpdateInProgress, Some(why.clone())))
            }
            (decided, _) => decided,
        };
        let Some((next, reason)) = decided else {
            continue;
        };
        if next == stack.stack_status && reason == stack.status_reason {
            continue;
        }
        // Only if no operator changed the stack since it was read.
        if !store.transition_stack_status(
            &stack.stack_id,
            &stack.latest_version_id,
            stack.stack_status,
            next,
            reason.clone(),
            now,
        )? {
            continue;
        }
        let event = crate::events::Event::StackStatus {
            from: stack.stack_status,
            to: next,
            reason: reason.as_deref(),
        };
        store.record(&event, Some(&stack.stack_id), None, now)?;
        crate::stacks::tasks::settle(
            store,
            &stack.stack_id,
            &stack.latest_version_id,
            next,
            reason.as_deref(),
            now,
        )?;
        if next == StackStatus::DeleteComplete {
            store.forget_alm_ids(&stack.stack_id)?;
        }
        tracing::info!(stack_id = %stack.stack_id, from = ?stack.stack_status, to = ?next, reason = ?reason, "stack status changed");
        changed += 1;
    }
    // Acks wait in memory until a pass writes them (at least every tick),
    // last, so writing them never delays a push.
    changed += store.write_acks()?;
    Ok(changed)
}

/// Why a slot's agents changed, when it was not the stack's own doing: an
/// agent it left is draining or was lost.
fn moved(
    slot: &Slot,
    before: &[String],
    after: &[String],
    agents: &HashMap<&str, (&AgentRecord, &Candidate)>,
) -> Option<String> {
    let left = before.iter().find(|id| !after.contains(id))?;
    let (agent, candidate) = agents.get(left.as_str())?;
    let why = match (&agent.drain, candidate.eligible) {
        (Some(drain), _) => match drain.reason {
            DrainReason::Spot => format!(
                "{} is terminating ({} {})",
                agent.instance_id,
                drain.cloud.as_deref().unwrap_or("cloud"),
                drain.action.as_deref().unwrap_or("notice")
            ),
            DrainReason::Rebalance => format!("{} is at risk (rebalance)", agent.instance_id),
            DrainReason::Operator => format!("{} is being drained", agent.instance_id),
        },
        (None, false) => format!("{} was lost", agent.instance_id),
        (None, true) => return None,
    };
    Some(format!("moving {} off {why}", slot.1))
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
