//! The webhook delivery queue. Three trees work together, and every change
//! to a pending delivery updates them in one transaction:
//!
//! - `deliveries`: every delivery record, history included, keyed
//!   `hook \0 event` (BE), so a hook's deliveries list in event order;
//! - `delivery_queue`: the same keys, pending deliveries only: each hook's
//!   queue in event order (and `queue_lens`: its length, for the bound);
//! - `delivery_due`: `due ms (BE) ++ hook \0 event` for the head of each
//!   hook's queue only, so the due deliveries are a range scan up to now
//!   and a hook's later deliveries wait behind its head (order kept).
//!
//! All writers of these trees hold one lock (`Store::delivery_lock`), so
//! what a writer reads before its transaction (a queue's length, the next
//! head) is still true when the transaction runs.

use super::hooks::{DeliveryRecord, DeliveryState};
use super::stacks::flatten;
use super::{decode, encode, get, scan, Store, StoreResult};
use sled::transaction::{ConflictableTransactionResult, Transactional, TransactionalTree};
use std::ops::Bound;

type TxResult = ConflictableTransactionResult<(), super::StoreError>;

/// `meta` key: the due index is built (existing deliveries migrated).
const INDEX_BUILT: &[u8] = b"delivery_index_v1";

/// Why a delivery past its hook's queue bound was never attempted.
pub const QUEUE_FULL: &str = "queue full: the receiver fell too far behind";

/// What [`Store::queue_delivery`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Put at the end of the hook's queue.
    Queued,
    /// The queue was at its bound: stored as failed ([`QUEUE_FULL`]).
    Full,
    /// This delivery exists already (a fan-out repeated after a crash).
    Exists,
    /// The hook is gone.
    NoHook,
}

/// The head of a hook's queue, due at `due_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    /// When it is due (ms since the epoch), as its due entry says.
    pub due_ms: i64,
    pub hook_id: String,
    /// With the hook, the delivery's key.
    pub event_id: u64,
}

fn delivery_key(hook_id: &str, event_id: u64) -> Vec<u8> {
    let mut key = super::pair_prefix(hook_id);
    key.extend_from_slice(&event_id.to_be_bytes());
    key
}

/// Negative times (never written) sort as 0.
fn due_key(due_ms: i64, delivery_key: &[u8]) -> Vec<u8> {
    let mut key = u64::try_from(due_ms).unwrap_or(0).to_be_bytes().to_vec();
    key.extend_from_slice(delivery_key);
    key
}

fn parse_due_key(key: &[u8]) -> Option<DueDelivery> {
    let (due, rest) = key.split_first_chunk::<8>()?;
    let (hook, event) = rest.split_last_chunk::<8>()?;
    let (0, hook) = hook.split_last()? else {
        return None;
    };
    Some(DueDelivery {
        due_ms: i64::try_from(u64::from_be_bytes(*due)).ok()?,
        hook_id: std::str::from_utf8(hook).ok()?.to_owned(),
        event_id: u64::from_be_bytes(*event),
    })
}

fn read_len(value: Option<sled::IVec>) -> u64 {
    value
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}

impl Store {
    fn delivery_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.delivery_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts a new pending delivery at the end of its hook's queue, unless
    /// the queue holds `max_queued` already: then the delivery is stored
    /// as failed ([`QUEUE_FULL`]) and never attempted, so the deliveries
    /// view shows the gap and the queue ahead keeps its order.
    pub fn queue_delivery(
        &self,
        delivery: &DeliveryRecord,
        max_queued: usize,
    ) -> StoreResult<Queued> {
        let _lock = self.delivery_lock();
        // A hook removed meanwhile gets no new delivery records.
        if !self.hooks.contains_key(delivery.hook_id.as_bytes())? {
            return Ok(Queued::NoHook);
        }
        let key = delivery_key(&delivery.hook_id, delivery.event_id);
        if self.deliveries.contains_key(&key)? {
            return Ok(Queued::Exists);
        }
        let len = read_len(self.queue_lens.get(delivery.hook_id.as_bytes())?);
        if len >= u64::try_from(max_queued).unwrap_or(u64::MAX) {
            let failed = DeliveryRecord {
                state: DeliveryState::Failed,
                last_error: Some(QUEUE_FULL.into()),
                ..delivery.clone()
            };
            self.deliveries
                .insert(key, encode("deliveries", &failed)?)?;
            return Ok(Queued::Full);
        }
        let value = encode("deliveries", delivery)?;
        self.queue_transaction(&key, &value, |queue, due, lens| {
            queue.insert(key.as_slice(), &[])?;
            lens.insert(delivery.hook_id.as_bytes(), &(len + 1).to_be_bytes())?;
            if len == 0 {
                // An empty queue: this one is its head, due now.
                due.insert(due_key(delivery.next_attempt_ms, &key), &[])?;
            }
            Ok(())
        })?;
        Ok(Queued::Queued)
    }

    /// Writes back the head of a hook's queue after an attempt (or a
    /// decision not to make one). Still pending: due again at its
    /// `next_attempt_ms`. Delivered or failed: it leaves the queue and the
    /// next delivery of the hook becomes the head. Nothing happens when
    /// the delivery is gone (its hook was removed meanwhile).
    pub fn record_attempt(&self, delivery: &DeliveryRecord) -> StoreResult<()> {
        let _lock = self.delivery_lock();
        let key = delivery_key(&delivery.hook_id, delivery.event_id);
        let Some(old) = get::<DeliveryRecord>(&self.deliveries, "deliveries", &key)? else {
            return Ok(());
        };
        let pending = delivery.state == DeliveryState::Pending;
        let next = if pending {
            None
        } else {
            self.next_in_queue(&delivery.hook_id, &key)?
        };
        let len = read_len(self.queue_lens.get(delivery.hook_id.as_bytes())?);
        let value = encode("deliveries", delivery)?;
        self.queue_transaction(&key, &value, |queue, due, lens| {
            due.remove(due_key(old.next_attempt_ms, &key))?;
            if pending {
                due.insert(due_key(delivery.next_attempt_ms, &key), &[])?;
                return Ok(());
            }
            if queue.remove(key.as_slice())?.is_some() {
                match len.saturating_sub(1) {
                    0 => lens.remove(delivery.hook_id.as_bytes())?,
                    left => lens.insert(delivery.hook_id.as_bytes(), &left.to_be_bytes())?,
                };
            }
            if let Some((next_key, next_due)) = &next {
                due.insert(due_key(*next_due, next_key), &[])?;
            }
            Ok(())
        })
    }

    /// Writes the delivery record `value` at `key` and, in the same
    /// transaction, whatever `change` does to the queue, due and length
    /// trees.
    fn queue_transaction<F>(&self, key: &[u8], value: &[u8], change: F) -> StoreResult<()>
    where
        F: Fn(&TransactionalTree, &TransactionalTree, &TransactionalTree) -> TxResult,
    {
        let result = (
            &self.deliveries,
            &self.delivery_queue,
            &self.delivery_due,
            &self.queue_lens,
        )
            .transaction(|(deliveries, queue, due, lens)| {
                deliveries.insert(key, value)?;
                change(queue, due, lens)
            });
        flatten(result)
    }

    /// The delivery queued after `key` for `hook_id`, and when it is due.
    fn next_in_queue(&self, hook_id: &str, key: &[u8]) -> StoreResult<Option<(Vec<u8>, i64)>> {
        let prefix = super::pair_prefix(hook_id);
        let range = (Bound::Excluded(key.to_vec()), Bound::Unbounded);
        let Some(entry) = self.delivery_queue.range(range).next() else {
            return Ok(None);
        };
        let (next, _) = entry?;
        if !next.starts_with(&prefix) {
            return Ok(None);
        }
        let record: Option<DeliveryRecord> = get(&self.deliveries, "deliveries", &next)?;
        Ok(record.map(|r| (next.to_vec(), r.next_attempt_ms)))
    }

    /// Forgets a due entry that points at nothing to attempt (its hook or
    /// its pending record is gone: a removal cut short by a crash), so the
    /// dispatcher does not meet it again; the hook's next queued delivery,
    /// if any, becomes the head.
    pub fn forget_due(&self, due: &DueDelivery) -> StoreResult<()> {
        let _lock = self.delivery_lock();
        let key = delivery_key(&due.hook_id, due.event_id);
        let next = self.next_in_queue(&due.hook_id, &key)?;
        self.delivery_due.remove(due_key(due.due_ms, &key))?;
        if self.delivery_queue.remove(&key)?.is_some() {
            let len = read_len(self.queue_lens.get(due.hook_id.as_bytes())?);
            self.queue_lens
                .insert(due.hook_id.as_bytes(), &len.saturating_sub(1).to_be_bytes())?;
        }
        if let Some((next_key, next_due)) = next {
            if self.hooks.contains_key(due.hook_id.as_bytes())? {
                self.delivery_due
                    .insert(due_key(next_due, &next_key), &[])?;
            }
        }
        Ok(())
    }

    /// The heads of hooks' queues due by `now_ms`, earliest first. Lazy:
    /// the dispatcher stops reading once it has no room for more.
    pub fn due_deliveries(&self, now_ms: i64) -> impl Iterator<Item = StoreResult<DueDelivery>> {
        let end = u64::try_from(now_ms)
            .unwrap_or(0)
            .saturating_add(1)
            .to_be_bytes();
        self.delivery_due
            .range(..end.to_vec())
            .keys()
            .filter_map(|key| match key {
                Ok(key) => parse_due_key(&key).map(Ok),
                Err(err) => Some(Err(err.into())),
            })
    }

    /// When the earliest head is due (`None`: nothing is queued).
    pub fn first_due_ms(&self) -> StoreResult<Option<i64>> {
        Ok(self
            .delivery_due
            .first()?
            .and_then(|(key, _)| parse_due_key(&key))
            .map(|due| due.due_ms))
    }

    /// One delivery.
    pub fn delivery(&self, hook_id: &str, event_id: u64) -> StoreResult<Option<DeliveryRecord>> {
        get(
            &self.deliveries,
            "deliveries",
            &delivery_key(hook_id, event_id),
        )
    }

    /// How many deliveries wait in a hook's queue.
    pub fn queued_deliveries(&self, hook_id: &str) -> StoreResult<u64> {
        Ok(read_len(self.queue_lens.get(hook_id.as_bytes())?))
    }

    /// A hook's deliveries, oldest event first.
    pub fn deliveries(&self, hook_id: &str) -> StoreResult<Vec<DeliveryRecord>> {
        scan(&self.deliveries, "deliveries", &super::pair_prefix(hook_id))
    }

    /// Removes a subscription, its queue and its deliveries.
    pub fn remove_hook(&self, id: &str) -> StoreResult<bool> {
        let _lock = self.delivery_lock();
        let existed = self.hooks.remove(id.as_bytes())?.is_some();
        let prefix = super::pair_prefix(id);
        // The head's due entry first: a removal cut short leaves at worst
        // entries the dispatcher finds without a hook and forgets.
        if let Some(entry) = self.delivery_queue.scan_prefix(&prefix).next() {
            let (head, _) = entry?;
            if let Some(record) = get::<DeliveryRecord>(&self.deliveries, "deliveries", &head)? {
                self.delivery_due
                    .remove(due_key(record.next_attempt_ms, &head))?;
            }
        }
        for tree in [&self.delivery_queue, &self.deliveries] {
            for key in tree.scan_prefix(&prefix).keys() {
                tree.remove(key?)?;
            }
        }
        self.queue_lens.remove(id.as_bytes())?;
        Ok(existed)
    }

    /// Removes finished deliveries (delivered or failed) created before
    /// `before_ms`; returns how many went.
    pub fn prune_deliveries(&self, before_ms: i64) -> StoreResult<usize> {
        let mut removed = 0;
        for entry in self.deliveries.iter() {
            let (key, value) = entry?;
            let delivery: DeliveryRecord = decode("deliveries", &key, &value)?;
            if delivery.state != DeliveryState::Pending && delivery.created_ms < before_ms {
                self.deliveries.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Builds the queues and the due index from the stored deliveries,
    /// once (a store from before the index has pending deliveries in
    /// `deliveries` only). Returns how many pending deliveries it queued.
    pub fn ensure_delivery_index(&self) -> StoreResult<usize> {
        if self.meta.contains_key(INDEX_BUILT)? {
            return Ok(0);
        }
        let _lock = self.delivery_lock();
        // A build cut short starts over.
        for tree in [&self.delivery_queue, &self.delivery_due, &self.queue_lens] {
            tree.clear()?;
        }
        let mut queued = 0;
        let mut current: Option<(String, u64)> = None;
        for entry in self.deliveries.iter() {
            let (key, value) = entry?;
            let delivery: DeliveryRecord = decode("deliveries", &key, &value)?;
            if delivery.state != DeliveryState::Pending {
                continue;
            }
            let same = current
                .as_ref()
                .is_some_and(|(hook, _)| hook == &delivery.hook_id);
            if !same {
                if let Some((hook, len)) = current.take() {
                    self.queue_lens
                        .insert(hook.as_bytes(), &len.to_be_bytes())?;
                }
                self.delivery_due
                    .insert(due_key(delivery.next_attempt_ms, &key), &[])?;
                current = Some((delivery.hook_id.clone(), 0));
            }
            if let Some((_, len)) = current.as_mut() {
                *len += 1;
            }
            self.delivery_queue.insert(&key, &[])?;
            queued += 1;
        }
        if let Some((hook, len)) = current {
            self.queue_lens
                .insert(hook.as_bytes(), &len.to_be_bytes())?;
        }
        self.meta.insert(INDEX_BUILT, &[1])?;
        if queued > 0 {
            tracing::info!(queued, "pending webhook deliveries indexed by due time");
        }
        Ok(queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HookRecord;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 8 << 20).expect("open");
        (dir, store)
    }

    fn hook(store: &Store, id: &str) {
        store
            .insert_hook(&HookRecord {
                id: id.into(),
                user_id: "u".into(),
                admin: false,
                client_id: None,
                url: "http://127.0.0.1:9/".into(),
                events: Vec::new(),
                stack_id: None,
                secret: "s".into(),
                created_ms: 0,
                after_event: 0,
            })
            .expect("hook");
    }

    fn pending(hook_id: &str, event_id: u64, due_ms: i64) -> DeliveryRecord {
        DeliveryRecord {
            id: format!("{hook_id}/{event_id}"),
            hook_id: hook_id.into(),
            event_id,
            event_type: "stack.created".into(),
            state: DeliveryState::Pending,
            attempts: 0,
            last_status: None,
            last_error: None,
            next_attempt_ms: due_ms,
            created_ms: due_ms,
            delivered_ms: None,
        }
    }

    fn due_at(store: &Store, now_ms: i64) -> Vec<(String, u64)> {
        store
            .due_deliveries(now_ms)
            .map(|due| due.map(|d| (d.hook_id, d.event_id)))
            .collect::<StoreResult<_>>()
            .expect("due")
    }

    fn pairs(expected: &[(&str, u64)]) -> Vec<(String, u64)> {
        expected.iter().map(|(h, e)| (h.to_string(), *e)).collect()
    }

    #[test]
    fn due_keys_round_trip() {
        let key = due_key(1_700_000_000_123, &delivery_key("wh-a", 42));
        assert_eq!(
            parse_due_key(&key),
            Some(DueDelivery {
                due_ms: 1_700_000_000_123,
                hook_id: "wh-a".into(),
                event_id: 42,
            })
        );
        assert_eq!(parse_due_key(b"short"), None);
        assert!(due_key(-5, b"k") < due_key(0, b"l"), "negative sorts as 0");
    }

    #[test]
    fn only_heads_due_by_now_are_found_earliest_first() {
        let (_dir, store) = store();
        for id in ["wh-a", "wh-b", "wh-c"] {
            hook(&store, id);
        }
        // (hook, event, due): wh-a's second delivery waits behind its head.
        for (hook_id, event, due) in [
            ("wh-a", 1, 300),
            ("wh-a", 2, 100),
            ("wh-b", 3, 200),
            ("wh-c", 4, 500),
        ] {
            let queued = store
                .queue_delivery(&pending(hook_id, event, due), 10)
                .expect("queue");
            assert_eq!(queued, Queued::Queued);
        }
        let table: [(i64, &[(&str, u64)]); 6] = [
            (0, &[]),
            (199, &[]),
            (200, &[("wh-b", 3)]),
            (300, &[("wh-b", 3), ("wh-a", 1)]),
            (499, &[("wh-b", 3), ("wh-a", 1)]),
            (i64::MAX, &[("wh-b", 3), ("wh-a", 1), ("wh-c", 4)]),
        ];
        for (now, expected) in table {
            assert_eq!(due_at(&store, now), pairs(expected), "now = {now}");
        }
        assert_eq!(store.first_due_ms().expect("first"), Some(200));
    }

    #[test]
    fn a_finished_head_hands_over_to_the_next_in_event_order() {
        let (_dir, store) = store();
        hook(&store, "wh-a");
        for event in [1, 2, 3] {
            store
                .queue_delivery(&pending("wh-a", event, 10), 10)
                .expect("queue");
        }
        // A failed attempt: the head stays, due later; nothing overtakes it.
        let retry = DeliveryRecord {
            attempts: 1,
            next_attempt_ms: 1_000,
            ..pending("wh-a", 1, 10)
        };
        store.record_attempt(&retry).expect("retry");
        assert_eq!(due_at(&store, 999), pairs(&[]));
        assert_eq!(due_at(&store, 1_000), pairs(&[("wh-a", 1)]));
        // Delivered: the next one is due at its own time.
        let delivered = DeliveryRecord {
            state: DeliveryState::Delivered,
            ..retry
        };
        store.record_attempt(&delivered).expect("delivered");
        assert_eq!(due_at(&store, 10), pairs(&[("wh-a", 2)]));
        assert_eq!(store.queued_deliveries("wh-a").expect("len"), 2);
        for event in [2, 3] {
            let failed = DeliveryRecord {
                state: DeliveryState::Failed,
                ..pending("wh-a", event, 10)
            };
            store.record_attempt(&failed).expect("failed");
        }
        assert_eq!(due_at(&store, i64::MAX), pairs(&[]));
        assert_eq!(store.queued_deliveries("wh-a").expect("len"), 0);
        assert_eq!(store.first_due_ms().expect("first"), None);
        let states: Vec<DeliveryState> = store
            .deliveries("wh-a")
            .expect("list")
            .iter()
            .map(|d| d.state)
            .collect();
        assert_eq!(
            states,
            [
                DeliveryState::Delivered,
                DeliveryState::Failed,
                DeliveryState::Failed
            ]
        );
    }

    #[test]
    fn past_the_bound_new_deliveries_fail_and_the_queue_keeps_its_order() {
        let (_dir, store) = store();
        hook(&store, "wh-a");
        let outcomes: Vec<Queued> = (1..=4)
            .map(|event| {
                store
                    .queue_delivery(&pending("wh-a", event, 10), 2)
                    .expect("queue")
            })
            .collect();
        assert_eq!(
            outcomes,
            [Queued::Queued, Queued::Queued, Queued::Full, Queued::Full]
        );
        let third = store.delivery("wh-a", 3).expect("read").expect("stored");
        assert_eq!(third.state, DeliveryState::Failed);
        assert_eq!(third.last_error.as_deref(), Some(QUEUE_FULL));
        assert_eq!(store.queued_deliveries("wh-a").expect("len"), 2);
        assert_eq!(
            store
                .queue_delivery(&pending("wh-a", 1, 10), 2)
                .expect("again"),
            Queued::Exists
        );
        assert_eq!(due_at(&store, 10), pairs(&[("wh-a", 1)]));
    }

    #[test]
    fn a_due_entry_without_a_pending_record_is_forgotten_and_the_next_takes_over() {
        let (_dir, store) = store();
        hook(&store, "wh-a");
        for event in [1, 2] {
            store
                .queue_delivery(&pending("wh-a", event, 10), 10)
                .expect("queue");
        }
        // The head's record gone (as after a removal cut short).
        store
            .deliveries
            .remove(delivery_key("wh-a", 1))
            .expect("remove");
        let due: Vec<DueDelivery> = store
            .due_deliveries(10)
            .collect::<StoreResult<_>>()
            .expect("due");
        store.forget_due(&due[0]).expect("forget");
        assert_eq!(due_at(&store, 10), pairs(&[("wh-a", 2)]));
        assert_eq!(store.queued_deliveries("wh-a").expect("len"), 1);
    }

    #[test]
    fn removing_a_hook_removes_its_queue_and_due_entry() {
        let (_dir, store) = store();
        hook(&store, "wh-a");
        hook(&store, "wh-b");
        store
            .queue_delivery(&pending("wh-a", 1, 10), 10)
            .expect("queue");
        store
            .queue_delivery(&pending("wh-b", 2, 20), 10)
            .expect("queue");
        assert!(store.remove_hook("wh-a").expect("remove"));
        assert_eq!(due_at(&store, 100), pairs(&[("wh-b", 2)]));
        assert_eq!(
            store
                .queue_delivery(&pending("wh-a", 3, 10), 10)
                .expect("gone"),
            Queued::NoHook
        );
        assert!(store.deliveries("wh-a").expect("list").is_empty());
    }

    #[test]
    fn pending_deliveries_from_before_the_index_are_migrated_once() {
        let (_dir, store) = store();
        hook(&store, "wh-a");
        hook(&store, "wh-b");
        store.meta.remove(INDEX_BUILT).expect("as before the index");
        // Written as the store did before the index: the record alone.
        let old = [
            (pending("wh-a", 1, 50), DeliveryState::Delivered),
            (pending("wh-a", 2, 70), DeliveryState::Pending),
            (pending("wh-a", 3, 20), DeliveryState::Pending),
            (pending("wh-b", 4, 60), DeliveryState::Pending),
        ];
        for (record, state) in old {
            let record = DeliveryRecord { state, ..record };
            store
                .deliveries
                .insert(
                    delivery_key(&record.hook_id, record.event_id),
                    encode("deliveries", &record).expect("encode"),
                )
                .expect("insert");
        }
        assert_eq!(store.ensure_delivery_index().expect("migrate"), 3);
        assert_eq!(store.ensure_delivery_index().expect("again"), 0, "once");
        // wh-a's head is its oldest pending event (2), due at its own time.
        assert_eq!(due_at(&store, 65), pairs(&[("wh-b", 4)]));
        assert_eq!(due_at(&store, 70), pairs(&[("wh-b", 4), ("wh-a", 2)]));
        assert_eq!(store.queued_deliveries("wh-a").expect("len"), 2);
        assert_eq!(store.queued_deliveries("wh-b").expect("len"), 1);
    }
}
