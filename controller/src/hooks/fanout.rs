//! Fan-out: every new event becomes a delivery in the queue of each hook
//! that wants it, in event order; the cursor of events done is stored.

use crate::clock;
use crate::store::{
    DeliveryRecord, DeliveryState, EventRecord, EventVisibility, HookRecord, Queued, Store,
    StoreResult,
};

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

/// Turns new events into queued deliveries (at most `max_queued` waiting
/// per hook); returns how many records it wrote.
pub fn fan_out(store: &Store, max_queued: usize) -> StoreResult<usize> {
    let mut cursor = match store.hooks_cursor()? {
        Some(cursor) => cursor,
        None => {
            // First start: hooks get what happens from now on.
            let latest = store.latest_event_id()?;
            store.set_hooks_cursor(latest)?;
            latest
        }
    };
    let mut hooks = Vec::new();
    for hook in store.hooks()? {
        if !store.hook_disabled(&hook)? {
            hooks.push(hook);
        }
    }
    let mut visibility = EventVisibility::default();
    let mut written = 0;
    loop {
        let page = store.events_after(cursor, 500)?;
        let Some(last) = page.last().map(|e| e.id) else {
            break;
        };
        let now = clock::now_ms();
        for event in &page {
            for hook in &hooks {
                if !wants(store, &mut visibility, hook, event) {
                    continue;
                }
                let delivery = DeliveryRecord {
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
                };
                match store.queue_delivery(&delivery, max_queued)? {
                    Queued::Queued => written += 1,
                    Queued::Full => {
                        tracing::warn!(hook_id = %hook.id, event_id = event.id, max_queued, "webhook queue full; delivery failed");
                        written += 1;
                    }
                    Queued::Exists | Queued::NoHook => {}
                }
            }
        }
        cursor = last;
        store.set_hooks_cursor(cursor)?;
    }
    Ok(written)
}
