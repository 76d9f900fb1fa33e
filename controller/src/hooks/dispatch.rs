//! The dispatcher: fan-out, then an attempt for each due head of a hook's
//! queue while there is room. Each attempt is its own task, so a receiver
//! that never answers holds up only its own hook (whose later deliveries
//! wait behind it, in event order) for at most the attempt's timeout.

use super::decide::{self, Admit};
use super::{attempt, fanout, HookSettings};
use crate::clock;
use crate::metrics::{Metrics, OutcomeLabels};
use crate::store::{DeliveryRecord, DeliveryState, EventRecord, HookRecord, Store, StoreResult};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::task::{Id, JoinError, JoinSet};
use tracing::Instrument;

/// Why a disabled hook's deliveries fail.
const DISABLED: &str = "hook disabled: the client that made it was revoked";

/// Attempts running now: at most one per hook, bounded in all and per
/// owner (see [`decide::admit`]).
#[derive(Default)]
struct InFlight {
    tasks: JoinSet<()>,
    /// Each task's hook and owner.
    running: HashMap<Id, (String, String)>,
    hooks: HashSet<String>,
    owners: HashMap<String, usize>,
}

impl InFlight {
    fn owner_running(&self, owner: &str) -> usize {
        self.owners.get(owner).copied().unwrap_or(0)
    }

    fn start(
        &mut self,
        hook: &HookRecord,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let handle = self.tasks.spawn(task);
        self.running
            .insert(handle.id(), (hook.id.clone(), hook.user_id.clone()));
        self.hooks.insert(hook.id.clone());
        *self.owners.entry(hook.user_id.clone()).or_default() += 1;
    }

    fn finished(&mut self, done: Result<(Id, ()), JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(err) => {
                tracing::error!(error = %err, "webhook attempt task failed");
                err.id()
            }
        };
        let Some((hook, owner)) = self.running.remove(&id) else {
            return;
        };
        self.hooks.remove(&hook);
        if let Some(count) = self.owners.get_mut(&owner) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.owners.remove(&owner);
            }
        }
    }

    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            self.finished(done);
        }
    }
}

/// Everything an attempt task needs besides its delivery.
#[derive(Clone)]
struct Shared {
    store: Store,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    settings: Arc<HookSettings>,
}

/// One attempt, recorded: the head of the hook's queue moves on or is
/// due again.
async fn attempt_task(
    shared: Shared,
    hook: HookRecord,
    event: EventRecord,
    delivery: DeliveryRecord,
) {
    let answer = attempt::send(
        &shared.client,
        &shared.settings,
        &hook,
        &event,
        &delivery.id,
    )
    .await;
    let delivery = decide::after_attempt(delivery, answer, clock::now_ms());
    let outcome = decide::outcome(delivery.state);
    shared
        .metrics
        .hook_deliveries
        .get_or_create(&OutcomeLabels {
            outcome: outcome.into(),
        })
        .inc();
    tracing::info!(
        outcome,
        attempts = delivery.attempts,
        status = ?delivery.last_status,
        "webhook delivery"
    );
    let recorded = async {
        shared.store.record_attempt(&delivery)?;
        shared.store.flush().await
    };
    if let Err(err) = recorded.await {
        // The head stays due as it was, and is tried again.
        tracing::error!(error = %err, "cannot record a webhook attempt");
    }
}

/// Starts attempts for due heads while there is room; returns how many
/// deliveries it settled without an attempt (written, to be flushed).
fn start_due(shared: &Shared, flight: &mut InFlight) -> StoreResult<usize> {
    let store = &shared.store;
    let mut settled = 0;
    for due in store.due_deliveries(clock::now_ms()) {
        let due = due?;
        let Some(hook) = store.hook(&due.hook_id)? else {
            store.forget_due(&due)?;
            continue;
        };
        let busy = flight.hooks.contains(&hook.id);
        match decide::admit(
            shared.settings.limits,
            flight.running.len(),
            busy,
            flight.owner_running(&hook.user_id),
        ) {
            Admit::Full => break,
            Admit::Wait => continue,
            Admit::Start => {}
        }
        let delivery = store.delivery(&due.hook_id, due.event_id)?;
        let Some(delivery) = delivery.filter(|d| d.state == DeliveryState::Pending) else {
            store.forget_due(&due)?;
            continue;
        };
        if store.hook_disabled(&hook)? {
            // Its client was revoked: nothing more goes out for it.
            store.record_attempt(&decide::given_up(delivery, DISABLED))?;
            settled += 1;
            continue;
        }
        let Some(event) = store.event(delivery.event_id)? else {
            store.record_attempt(&decide::given_up(delivery, "the event is no longer stored"))?;
            settled += 1;
            continue;
        };
        let span =
            tracing::info_span!("webhook_attempt", hook_id = %hook.id, delivery = %delivery.id);
        let task = attempt_task(shared.clone(), hook.clone(), event, delivery).instrument(span);
        flight.start(&hook, task);
    }
    Ok(settled)
}

/// One pass: new events into queues, then due heads into attempts.
async fn pass(shared: &Shared, flight: &mut InFlight) -> StoreResult<()> {
    let written = fanout::fan_out(&shared.store, shared.settings.max_queued)?;
    let settled = start_due(shared, flight)?;
    if written + settled > 0 {
        shared.store.flush().await?;
    }
    Ok(())
}

/// Runs fan-out and deliveries until the process ends: woken by every new
/// event, every finished attempt, and when the earliest head comes due
/// (at least every second).
pub async fn run(store: Store, metrics: Arc<Metrics>, settings: HookSettings) {
    let client = match attempt::client(&settings) {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the webhook client; webhooks are off");
            return;
        }
    };
    let shared = Shared {
        store,
        client,
        metrics,
        settings: Arc::new(settings),
    };
    let mut events = shared.store.follow_events();
    let mut flight = InFlight::default();
    loop {
        events.borrow_and_update();
        flight.reap();
        if let Err(err) = pass(&shared, &mut flight).await {
            tracing::error!(error = %err, "webhook pass failed");
        }
        shared
            .metrics
            .hook_attempts
            .set(i64::try_from(flight.running.len()).unwrap_or(i64::MAX));
        let first_due = shared.store.first_due_ms().unwrap_or(None);
        let wait = decide::next_wake(first_due, clock::now_ms());
        tokio::select! {
            changed = events.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            Some(done) = flight.tasks.join_next_with_id() => flight.finished(done),
            () = tokio::time::sleep(wait) => {}
        }
    }
}
