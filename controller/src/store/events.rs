//! The event log: append-only, numbered, filterable.

use super::{decode, encode, EventRecord, Store, StoreResult};

/// Which events to return.
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    /// Only events with an id greater than this.
    pub after_id: Option<u64>,
    pub stack_id: Option<String>,
    pub instance_id: Option<String>,
    pub kind: Option<String>,
    /// Only events of stacks in this set (ownership); `None` for all.
    pub stacks: Option<Vec<String>>,
    /// Only events whose `data` has these top-level text fields (the
    /// audit trail's `username` and `action`).
    pub data: Vec<(&'static str, String)>,
    pub limit: usize,
}

impl EventFilter {
    /// Stack, instance and type match (ownership aside).
    pub fn matches_fields(&self, event: &EventRecord) -> bool {
        let same = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|want| have.as_ref() == Some(want))
        };
        same(&self.stack_id, &event.stack_id)
            && same(&self.instance_id, &event.instance_id)
            && self.kind.as_ref().is_none_or(|kind| &event.kind == kind)
            && self.data.iter().all(|(key, want)| {
                event.data.get(key).and_then(serde_json::Value::as_str) == Some(want.as_str())
            })
    }

    fn matches(&self, event: &EventRecord) -> bool {
        self.matches_fields(event)
            && self.stacks.as_ref().is_none_or(|stacks| {
                event
                    .stack_id
                    .as_ref()
                    .is_some_and(|id| stacks.iter().any(|s| s == id))
            })
    }
}

/// Who may see an event: an admin every event; anyone else the events of
/// the stacks they own, never fleet-wide ones. Each stack's owner is read
/// once per reader. The event stream and the webhook fan-out both decide
/// through this.
#[derive(Debug, Default)]
pub struct EventVisibility {
    owners: std::collections::HashMap<String, Option<String>>,
}

impl EventVisibility {
    /// Whether `user_id` (an admin when `admin`) may see `event`.
    pub fn sees(&mut self, store: &Store, user_id: &str, admin: bool, event: &EventRecord) -> bool {
        if admin {
            return true;
        }
        let Some(stack_id) = &event.stack_id else {
            return false;
        };
        let owner = self
            .owners
            .entry(stack_id.clone())
            .or_insert_with(|| store.stack(stack_id).ok().flatten().map(|s| s.user_id));
        owner.as_deref() == Some(user_id)
    }
}

impl Store {
    /// Records `event` (about `stack_id` and `instance_id`, at `time_ms`)
    /// and returns it with its id: the one way into the event log, so
    /// every event has a type [`crate::events::Event`] names.
    pub fn record(
        &self,
        event: &crate::events::Event<'_>,
        stack_id: Option<&str>,
        instance_id: Option<&str>,
        time_ms: i64,
    ) -> StoreResult<EventRecord> {
        self.append_event(
            event.kind(),
            stack_id,
            instance_id,
            crate::clock::rfc3339_ms(time_ms),
            event.data(),
        )
    }

    /// Appends an event and returns it with its id. Ids come from sled's
    /// persistent counter, so they keep increasing across restarts.
    pub(super) fn append_event(
        &self,
        kind: &str,
        stack_id: Option<&str>,
        instance_id: Option<&str>,
        time: String,
        data: serde_json::Value,
    ) -> StoreResult<EventRecord> {
        let _order = self.event_order();
        let event = EventRecord {
            id: self.db.generate_id()? + 1,
            time,
            kind: kind.to_owned(),
            stack_id: stack_id.map(str::to_owned),
            instance_id: instance_id.map(str::to_owned),
            data,
        };
        self.events
            .insert(event.id.to_be_bytes(), encode("events", &event)?)?;
        self.announce_event(event.id);
        Ok(event)
    }

    /// Serializes event writers (see `Store::event_order`).
    pub(super) fn event_order(&self) -> std::sync::MutexGuard<'_, ()> {
        self.event_order
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells followers that events up to `id` exist.
    pub(super) fn announce_event(&self, id: u64) {
        self.latest_event.send_if_modified(|latest| {
            let newer = id > *latest;
            *latest = (*latest).max(id);
            newer
        });
    }

    /// Removes events older than `before_ms` (oldest first, stopping at
    /// the first newer one) and returns how many went. Ids are never
    /// reused, so a follower resuming from a removed id just starts at the
    /// oldest event kept.
    pub fn prune_events(&self, before_ms: i64) -> StoreResult<usize> {
        let mut removed = 0;
        for entry in self.events.iter() {
            let (key, value) = entry?;
            let event: EventRecord = decode("events", &key, &value)?;
            let time = chrono::DateTime::parse_from_rfc3339(&event.time)
                .map_or(i64::MIN, |t| t.timestamp_millis());
            if time >= before_ms {
                break;
            }
            self.events.remove(key)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// One event.
    pub fn event(&self, id: u64) -> StoreResult<Option<EventRecord>> {
        super::get(&self.events, "events", &id.to_be_bytes())
    }

    /// A receiver that changes whenever a new event is written.
    pub fn follow_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.latest_event.subscribe()
    }

    /// Up to `limit` events with ids above `after`, in order, unfiltered;
    /// for the event stream, which filters itself.
    pub fn events_after(&self, after: u64, limit: usize) -> StoreResult<Vec<EventRecord>> {
        let mut out = Vec::new();
        for entry in self.events.range(after.saturating_add(1).to_be_bytes()..) {
            let (key, value) = entry?;
            out.push(decode("events", &key, &value)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The events matching `filter` after skipping `offset` of them (at
    /// most `filter.limit`), oldest first, and how many match in all (the
    /// whole list a page is cut from; the event log is bounded by its
    /// retention, so counting it is too).
    pub fn events_page(
        &self,
        filter: &EventFilter,
        offset: usize,
    ) -> StoreResult<(Vec<EventRecord>, usize)> {
        let start = filter.after_id.map_or(0, |id| id.saturating_add(1));
        let mut out = Vec::new();
        let mut total = 0usize;
        for entry in self.events.range(start.to_be_bytes()..) {
            let (key, value) = entry?;
            let event: EventRecord = decode("events", &key, &value)?;
            if filter.matches(&event) {
                if total >= offset && out.len() < filter.limit {
                    out.push(event);
                }
                total += 1;
            }
        }
        Ok((out, total))
    }

    /// Events matching `filter`, oldest first.
    pub fn events(&self, filter: &EventFilter) -> StoreResult<Vec<EventRecord>> {
        let start = filter.after_id.map_or(0, |id| id.saturating_add(1));
        let mut out = Vec::new();
        for entry in self.events.range(start.to_be_bytes()..) {
            let (key, value) = entry?;
            let event: EventRecord = decode("events", &key, &value)?;
            if filter.matches(&event) {
                out.push(event);
                if out.len() >= filter.limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DeliveryRecord, DeliveryState, HookRecord};
    use serde_json::json;

    #[test]
    fn old_events_and_finished_deliveries_are_pruned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1 << 20).expect("store");
        let old = store
            .append_event(
                "a",
                None,
                None,
                "2020-01-01T00:00:00.000Z".into(),
                json!({}),
            )
            .expect("event");
        let new = store
            .append_event(
                "b",
                None,
                None,
                "2030-01-01T00:00:00.000Z".into(),
                json!({}),
            )
            .expect("event");
        let cutoff = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .expect("time")
            .timestamp_millis();
        assert_eq!(store.prune_events(cutoff).expect("prune"), 1);
        assert!(store.event(old.id).expect("read").is_none());
        assert!(store.event(new.id).expect("read").is_some());
        assert_eq!(store.prune_events(cutoff).expect("prune"), 0);

        store
            .insert_hook(&HookRecord {
                id: "wh-1".into(),
                user_id: "u".into(),
                admin: true,
                client_id: None,
                url: "http://127.0.0.1:9/".into(),
                events: vec![],
                stack_id: None,
                secret: "s".into(),
                created_ms: 0,
                after_event: 0,
            })
            .expect("hook");
        for (event_id, state) in [
            (1, DeliveryState::Delivered),
            (2, DeliveryState::Failed),
            (3, DeliveryState::Pending),
        ] {
            let delivery = DeliveryRecord {
                id: format!("wh-1/{event_id}"),
                hook_id: "wh-1".into(),
                event_id,
                event_type: "a".into(),
                state: DeliveryState::Pending,
                attempts: 1,
                last_status: None,
                last_error: None,
                next_attempt_ms: 0,
                created_ms: 10,
                delivered_ms: None,
            };
            store.queue_delivery(&delivery, 10).expect("queued");
            // Heads in event order: 1 delivered, then 2 failed; 3 waits.
            if state != DeliveryState::Pending {
                store
                    .record_attempt(&DeliveryRecord { state, ..delivery })
                    .expect("attempted");
            }
        }
        assert_eq!(store.prune_deliveries(100).expect("prune"), 2);
        let left = store.deliveries("wh-1").expect("list");
        assert_eq!(left.len(), 1, "pending deliveries stay");
        assert_eq!(left[0].state, DeliveryState::Pending);
    }
}
