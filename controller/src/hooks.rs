//! Webhooks: every event is fanned out to the subscriptions that want it,
//! as a delivery record in the store, then POSTed to the subscriber,
//! signed, and retried with exponential backoff until it is taken or the
//! attempts run out. Both steps survive restarts: the fan-out cursor and
//! the delivery queue are stored.
//!
//! A delivery is `POST <url>` with the event record as JSON (as `GET
//! /v3/events` shows it) and the headers `X-Flotilla-Event` (type),
//! `X-Flotilla-Delivery` (id, the same across retries) and
//! `X-Flotilla-Signature-256: sha256=<hex HMAC-SHA256 of the body with the
//! hook's secret>`. Any 2xx answer counts as delivered; redirects are not
//! followed.

use crate::clock;
use crate::metrics::Metrics;
use crate::store::{
    DeliveryRecord, DeliveryState, EventRecord, EventVisibility, HookRecord, Store, StoreResult,
};
use hmac::{Hmac, Mac};
use std::sync::Arc;
use std::time::Duration;

/// Attempts before a delivery is given up.
pub const MAX_ATTEMPTS: u32 = 8;
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long a receiver may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries attempted at once.
const BATCH: usize = 32;

/// The wait before attempt `attempts + 1`: 1 s, 2 s, 4 s, ... up to 5 min.
pub fn backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `hook` wants `event` (and its owner may see it).
fn wants(
    store: &Store,
    visibility: &mut EventVisibility,
    hook: &HookRecord,
    event: &EventRecord,
) -> bool {
    if event.id <= hook.after_event {
        return false;
    }
    if !hook.events.is_empty() && !hook.events.iter().any(|t| t == &event.kind) {
        return false;
    }
    if hook.stack_id.is_some() && hook.stack_id != event.stack_id {
        return false;
    }
    visibility.sees(store, &hook.user_id, hook.admin, event)
}

/// Turns new events into delivery records; returns how many.
fn fan_out(store: &Store) -> StoreResult<usize> {
    let mut cursor = match store.hooks_cursor()? {
        Some(cursor) => cursor,
        None => {
            // First start: hooks get what happens from now on.
            let latest = store.latest_event_id()?;
            store.set_hooks_cursor(latest)?;
            latest
        }
    };
    let mut hooks = store.hooks()?;
    let mut enabled = Vec::with_capacity(hooks.len());
    for hook in hooks.drain(..) {
        if !store.hook_disabled(&hook)? {
            enabled.push(hook);
        }
    }
    let hooks = enabled;
    let mut visibility = EventVisibility::default();
    let mut queued = 0;
    loop {
        let page = store.events_after(cursor, 500)?;
        let Some(last) = page.last().map(|e| e.id) else {
            break;
        };
        let now = clock::now_ms();
        for event in &page {
            for hook in &hooks {
                if wants(store, &mut visibility, hook, event) {
                    store.put_delivery(&DeliveryRecord {
                        id: format!("{}/{}", hook.id, event.id),
                        hook_id: hook.id.clone(),
                        event_id: event.id,
                        event_type: event.kind.clone(),
                        state: DeliveryState::Pending,
                        attempts: 0,
                        last_status: None,
                        last_error: None,
                        next_attempt_ms: now,
                        created_ms: now,
                        delivered_ms: None,
                    })?;
                    queued += 1;
                }
            }
        }
        cursor = last;
        store.set_hooks_cursor(cursor)?;
    }
    Ok(queued)
}

/// One attempt of one delivery; returns the updated record.
async fn attempt(
    client: &reqwest::Client,
    hook: &HookRecord,
    event: &EventRecord,
    mut delivery: DeliveryRecord,
) -> DeliveryRecord {
    let body = serde_json::to_vec(event).unwrap_or_default();
    let answer = client
        .post(&hook.url)
        .header("Content-Type", "application/json")
        .header(
            "User-Agent",
            concat!("flotilla/", env!("CARGO_PKG_VERSION")),
        )
        .header("X-Flotilla-Event", &event.kind)
        .header("X-Flotilla-Delivery", &delivery.id)
        .header("X-Flotilla-Signature-256", sign(&hook.secret, &body))
        .body(body)
        .send()
        .await;
    delivery.attempts += 1;
    let now = clock::now_ms();
    let error = match answer {
        Ok(response) if response.status().is_success() => {
            delivery.state = DeliveryState::Delivered;
            delivery.last_status = Some(response.status().as_u16());
            delivery.last_error = None;
            delivery.delivered_ms = Some(now);
            return delivery;
        }
        Ok(response) => {
            delivery.last_status = Some(response.status().as_u16());
            format!("answered {}", response.status())
        }
        Err(err) if err.is_timeout() => "no answer in time".to_owned(),
        Err(err) if err.is_connect() => "cannot connect".to_owned(),
        Err(_) => "request failed".to_owned(),
    };
    delivery.last_error = Some(error);
    if delivery.attempts >= MAX_ATTEMPTS {
        delivery.state = DeliveryState::Failed;
    } else {
        let wait = i64::try_from(backoff(delivery.attempts).as_millis()).unwrap_or(i64::MAX);
        delivery.next_attempt_ms = now + wait;
    }
    delivery
}

/// Attempts every due delivery once.
async fn deliver_due(
    store: &Store,
    client: &reqwest::Client,
    metrics: &Metrics,
    allow_private: bool,
) -> StoreResult<usize> {
    let due = store.due_deliveries(clock::now_ms(), BATCH)?;
    let count = due.len();
    let mut attempts = Vec::new();
    for delivery in due {
        let Some(hook) = store.hook(&delivery.hook_id)? else {
            continue;
        };
        if store.hook_disabled(&hook)? {
            // Its client was revoked: nothing more goes out for it.
            store.put_delivery(&DeliveryRecord {
                state: DeliveryState::Failed,
                last_error: Some("hook disabled: the client that made it was revoked".into()),
                ..delivery
            })?;
            continue;
        }
        let Some(event) = store.event(delivery.event_id)? else {
            continue;
        };
        attempts.push(async move {
            // Checked again at every attempt: a name can come to point
            // inward (the client's resolver refuses such addresses too).
            let delivery = match crate::hook_targets::check_url(&hook.url, allow_private).await {
                Ok(()) => attempt(client, &hook, &event, delivery).await,
                Err(_) => DeliveryRecord {
                    state: DeliveryState::Failed,
                    attempts: delivery.attempts + 1,
                    last_status: None,
                    last_error: Some("refused".into()),
                    ..delivery
                },
            };
            (delivery, hook.id)
        });
    }
    for (delivery, hook_id) in futures_util::future::join_all(attempts).await {
        let outcome = match delivery.state {
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Pending => "retrying",
        };
        metrics
            .hook_deliveries
            .get_or_create(&crate::metrics::OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
        tracing::info!(hook_id = %hook_id, delivery = %delivery.id, outcome, attempts = delivery.attempts, status = ?delivery.last_status, "webhook delivery");
        store.put_delivery(&delivery)?;
    }
    Ok(count)
}

/// Runs fan-out and deliveries until the process ends: woken by every new
/// event, and at least every second for retries that come due.
pub async fn run(store: Store, metrics: Arc<Metrics>, allow_private: bool) {
    let client = match reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(crate::hook_targets::resolver(allow_private))
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the webhook client; webhooks are off");
            return;
        }
    };
    let mut events = store.follow_events();
    loop {
        events.borrow_and_update();
        let result = async {
            let queued = fan_out(&store)?;
            let attempted = deliver_due(&store, &client, &metrics, allow_private).await?;
            if queued + attempted > 0 {
                store.flush().await?;
            }
            StoreResult::Ok(attempted)
        }
        .await;
        let busy = match result {
            Ok(attempted) => attempted >= BATCH,
            Err(err) => {
                tracing::error!(error = %err, "webhook pass failed");
                false
            }
        };
        if busy {
            continue;
        }
        tokio::select! {
            changed = events.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn signatures_are_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
