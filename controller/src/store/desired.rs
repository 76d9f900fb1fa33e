//! Agents' desired states: whole in memory, and on disk as small records
//! that name their placements, each distinct placement stored once.
//!
//! A configuration placed on ten thousand agents is one placement: storing
//! its container section in every agent's record made each update write
//! (and each pass decode) ten thousand copies of it. Here an update writes
//! the placement once and ten thousand records of a few dozen bytes, and a
//! pass reads nothing from disk. Placements no record names any more are
//! deleted by the write that dropped the last reference, so the tree holds
//! what the fleet runs and nothing more.

use super::{decode, encode, DesiredRecord, PlacementRecord, Store, StoreError, StoreResult};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// One agent's record on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredDesired {
    generation: u64,
    /// Placements written inline, as records from before `parts` held them;
    /// rewritten as parts when the store is first read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    placements: Vec<PlacementRecord>,
    /// Keys into the placement tree, in placement order.
    #[serde(default)]
    parts: Vec<String>,
    #[serde(default)]
    history: BTreeSet<String>,
}

/// A stored placement and the number of records naming it.
struct Shared {
    placement: Arc<PlacementRecord>,
    refs: usize,
}

/// Everything in memory (the store's
/// [`Resident`](super::resident::Resident), loaded whole on first use, so a
/// pass never reads the disk): every agent's record and every stored
/// placement; bounded by the fleet, one record per agent and one placement
/// per configuration version some agent is given. Records in memory hold
/// the very `Arc`s of `placements`, so a placement's key is found by its
/// address, not by encoding it again.
#[derive(Default)]
pub(super) struct Loaded {
    records: HashMap<String, Arc<DesiredRecord>>,
    placements: HashMap<String, Shared>,
    /// Key by the address of a placement in `placements`.
    keys: HashMap<usize, String>,
}

/// The address that identifies a shared placement.
fn address(placement: &Arc<PlacementRecord>) -> usize {
    Arc::as_ptr(placement) as usize
}

impl Loaded {
    /// The stored copy of `placement` (stored now if it is new, in
    /// `parts`), one more reference counted, and its key. `fresh` holds
    /// the keys of placements that are not the stored copies, by address,
    /// for one write (whose records keep them alive, so no address is
    /// reused meanwhile): a configuration unchanged on ten thousand agents
    /// is encoded once per write, not once per agent.
    fn hold(
        &mut self,
        placement: &Arc<PlacementRecord>,
        fresh: &mut HashMap<usize, String>,
        parts: &mut sled::Batch,
    ) -> StoreResult<(Arc<PlacementRecord>, String)> {
        let at = address(placement);
        let key = match self.keys.get(&at).or_else(|| fresh.get(&at)) {
            Some(key) => key.clone(),
            None => {
                let key = key_of(placement)?;
                fresh.insert(at, key.clone());
                key
            }
        };
        let shared = match self.placements.entry(key.clone()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                parts.insert(key.as_bytes(), encode("desired_parts", &**placement)?);
                self.keys.insert(at, key.clone());
                entry.insert(Shared {
                    placement: placement.clone(),
                    refs: 0,
                })
            }
        };
        shared.refs += 1;
        Ok((shared.placement.clone(), key))
    }

    /// One reference fewer to `placement`; its key goes into `released`
    /// when that was the last (a later record of the same write may still
    /// take it up again).
    fn release(&mut self, placement: &Arc<PlacementRecord>, released: &mut Vec<String>) {
        let Some(key) = self.keys.get(&address(placement)) else {
            return;
        };
        let Some(shared) = self.placements.get_mut(key) else {
            return;
        };
        shared.refs = shared.refs.saturating_sub(1);
        if shared.refs == 0 {
            released.push(key.clone());
        }
    }

    /// Drops the placements in `keys` that no record names, from memory
    /// and (in `gone`) from the tree.
    fn forget_unnamed(&mut self, keys: Vec<String>, gone: &mut sled::Batch) {
        for key in keys {
            if self
                .placements
                .get(&key)
                .is_some_and(|shared| shared.refs == 0)
            {
                if let Some(shared) = self.placements.remove(&key) {
                    self.keys.remove(&address(&shared.placement));
                }
                gone.remove(key.as_bytes());
            }
        }
    }
}

/// A placement's key: a digest of its encoding, so equal placements share
/// one stored copy whoever wrote them.
fn key_of(placement: &PlacementRecord) -> StoreResult<String> {
    let bytes = encode("desired_parts", placement)?;
    Ok(hex::encode(&Sha256::digest(&bytes)[..16]))
}

impl Store {
    /// Runs `f` on the loaded desired states, loading them first if this
    /// is the first use.
    fn with_desired<T>(&self, f: impl FnOnce(&mut Loaded) -> StoreResult<T>) -> StoreResult<T> {
        self.desired_cache.with(|| self.load_desired(), f)
    }

    /// Reads every record and placement, sharing equal placements, and
    /// rewrites records that still hold theirs inline.
    fn load_desired(&self) -> StoreResult<Loaded> {
        let mut loaded = Loaded::default();
        for entry in self.desired_parts.iter() {
            let (key, value) = entry?;
            let placement = Arc::new(decode::<PlacementRecord>("desired_parts", &key, &value)?);
            let key = String::from_utf8_lossy(&key).into_owned();
            loaded.keys.insert(address(&placement), key.clone());
            loaded.placements.insert(key, Shared { placement, refs: 0 });
        }
        let mut inline = Vec::new();
        for entry in self.desired.iter() {
            let (key, value) = entry?;
            let stored: StoredDesired = decode("desired", &key, &value)?;
            let agent_id = String::from_utf8_lossy(&key).into_owned();
            if !stored.placements.is_empty() {
                let record = DesiredRecord {
                    generation: stored.generation,
                    placements: stored.placements.into_iter().map(Arc::new).collect(),
                    history: stored.history,
                };
                inline.push((agent_id, Arc::new(record)));
                continue;
            }
            let mut placements = Vec::with_capacity(stored.parts.len());
            for part in &stored.parts {
                let Some(shared) = loaded.placements.get_mut(part) else {
                    return Err(StoreError::Conflict(format!(
                        "stored desired state {agent_id} names a placement {part} that is not stored"
                    )));
                };
                shared.refs += 1;
                placements.push(shared.placement.clone());
            }
            let record = DesiredRecord {
                generation: stored.generation,
                placements,
                history: stored.history,
            };
            loaded.records.insert(agent_id, Arc::new(record));
        }
        if !inline.is_empty() {
            self.stage_desired(&mut loaded, &inline)?.write(self)?;
            tracing::info!(
                records = inline.len(),
                "desired states rewritten with shared placements"
            );
        }
        // Placements a crash left between their write and their records'.
        let mut unnamed = sled::Batch::default();
        let orphans: Vec<String> = loaded
            .placements
            .iter()
            .filter(|(_, shared)| shared.refs == 0)
            .map(|(key, _)| key.clone())
            .collect();
        loaded.forget_unnamed(orphans, &mut unnamed);
        self.desired_parts.apply_batch(unnamed)?;
        Ok(loaded)
    }

    /// Takes records into memory and returns their writes: new
    /// placements first, then the records naming them, then the
    /// placements nobody names any more.
    fn stage_desired(
        &self,
        loaded: &mut Loaded,
        records: &[(String, Arc<DesiredRecord>)],
    ) -> StoreResult<Staged> {
        let mut staged = Staged::default();
        let mut released = Vec::new();
        let mut fresh = HashMap::new();
        for (agent_id, desired) in records {
            let mut names = Vec::with_capacity(desired.placements.len());
            let mut shared = Vec::with_capacity(desired.placements.len());
            for placement in &desired.placements {
                let (stored, key) = loaded.hold(placement, &mut fresh, &mut staged.parts)?;
                shared.push(stored);
                names.push(key);
            }
            staged.records.push((
                agent_id.clone(),
                StoredDesired {
                    generation: desired.generation,
                    placements: Vec::new(),
                    parts: names,
                    history: desired.history.clone(),
                },
            ));
            let record = Arc::new(DesiredRecord {
                generation: desired.generation,
                placements: shared,
                history: desired.history.clone(),
            });
            if let Some(old) = loaded.records.insert(agent_id.clone(), record) {
                for placement in &old.placements {
                    loaded.release(placement, &mut released);
                }
            }
        }
        loaded.forget_unnamed(released, &mut staged.gone);
        Ok(staged)
    }

    /// The stored copy of a placement equal to `placement`, if some agent
    /// holds one, else `placement` itself. A pass that builds its
    /// placements afresh takes the stored copies, so comparing an agent's
    /// new state with its old one compares addresses, not container
    /// sections, and a write finds their keys without encoding them.
    pub fn shared_placement(
        &self,
        placement: PlacementRecord,
    ) -> StoreResult<Arc<PlacementRecord>> {
        let key = key_of(&placement)?;
        self.with_desired(|loaded| {
            Ok(match loaded.placements.get(&key) {
                Some(shared) if *shared.placement == placement => shared.placement.clone(),
                _ => Arc::new(placement),
            })
        })
    }

    /// An agent's desired state (generation 0, empty, when none yet).
    pub fn desired(&self, agent_id: &str) -> StoreResult<Arc<DesiredRecord>> {
        self.with_desired(|loaded| Ok(loaded.records.get(agent_id).cloned().unwrap_or_default()))
    }

    /// Replaces agents' desired states. `announce` is called with them all
    /// first (the scheduler pushes them to their agents there, so ten
    /// thousand agents wait for no encoding), under the lock that readers
    /// take, so nobody reads the old state of an agent that may already
    /// act on the new one. The records are encoded and written after that
    /// lock is released (a session reading its agent's state meanwhile
    /// waits for no disk), under a writer lock held from the change in
    /// memory to its write, so writes land in the order of the changes.
    /// As everywhere, they are durable after the next flush.
    pub fn put_desired(
        &self,
        records: &[(String, Arc<DesiredRecord>)],
        announce: impl FnOnce(&[(String, Arc<DesiredRecord>)]),
    ) -> StoreResult<()> {
        let _order = self
            .desired_writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let staged = self.with_desired(|loaded| {
            announce(records);
            self.stage_desired(loaded, records)
        })?;
        staged.write(self)
    }
}

/// The tree writes of one change of desired states, in the order they
/// must land.
#[derive(Default)]
struct Staged {
    /// Placements stored for the first time.
    parts: sled::Batch,
    /// The records, naming their placements.
    records: Vec<(String, StoredDesired)>,
    /// Placements no record names any more.
    gone: sled::Batch,
}

impl Staged {
    fn write(self, store: &Store) -> StoreResult<()> {
        let mut batch = sled::Batch::default();
        for (agent_id, stored) in &self.records {
            batch.insert(agent_id.as_bytes(), encode("desired", stored)?);
        }
        store.desired_parts.apply_batch(self.parts)?;
        store.desired.apply_batch(batch)?;
        store.desired_parts.apply_batch(self.gone)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(stack: &str, version: &str) -> Arc<PlacementRecord> {
        Arc::new(PlacementRecord {
            stack_id: stack.into(),
            flag: "Web01".into(),
            version_id: version.into(),
            spec_json: format!(r#"{{"image":"web:{version}"}}"#),
            ..PlacementRecord::default()
        })
    }

    fn state(generation: u64, placements: &[&Arc<PlacementRecord>]) -> Arc<DesiredRecord> {
        Arc::new(DesiredRecord {
            generation,
            placements: placements.iter().map(|p| Arc::clone(p)).collect(),
            history: placements.iter().map(|p| p.stack_id.clone()).collect(),
        })
    }

    fn put(store: &Store, records: &[(&str, Arc<DesiredRecord>)]) {
        let records: Vec<(String, Arc<DesiredRecord>)> = records
            .iter()
            .map(|(id, d)| ((*id).to_owned(), d.clone()))
            .collect();
        store.put_desired(&records, |_| {}).expect("put");
    }

    #[test]
    fn a_placement_built_again_is_the_stored_copy_and_a_changed_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 8 << 20).expect("open");
        let v1 = placement("s1", "v1");
        put(&store, &[("a1", state(1, &[&v1]))]);
        let again = store
            .shared_placement(PlacementRecord::clone(&v1))
            .expect("shared");
        assert!(Arc::ptr_eq(
            &again,
            &store.desired("a1").expect("desired").placements[0]
        ));
        let changed = store
            .shared_placement(PlacementRecord::clone(&placement("s1", "v2")))
            .expect("shared");
        assert_eq!(changed.version_id, "v2");
        assert!(!Arc::ptr_eq(&changed, &again));
    }

    #[test]
    fn agents_share_one_stored_placement_and_unnamed_ones_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v1 = placement("st-a", "v1");
        {
            let store = Store::open(dir.path(), 8 << 20).expect("open");
            let agents: Vec<(String, Arc<DesiredRecord>)> = (0..100)
                .map(|i| (format!("ag-{i}"), state(1, &[&v1])))
                .collect();
            let mut announced = 0;
            store
                .put_desired(&agents, |all| announced = all.len())
                .expect("put");
            assert_eq!(announced, 100);
            assert_eq!(store.desired_parts.len(), 1);
            // A copy with the same content is the same stored placement.
            put(&store, &[("ag-0", state(2, &[&placement("st-a", "v1")]))]);
            assert_eq!(store.desired_parts.len(), 1);
            // Half move on: both versions are stored.
            let v2 = placement("st-a", "v2");
            let half: Vec<(String, Arc<DesiredRecord>)> = (0..50)
                .map(|i| (format!("ag-{i}"), state(3, &[&v2])))
                .collect();
            store.put_desired(&half, |_| {}).expect("put");
            assert_eq!(store.desired_parts.len(), 2);
            assert_eq!(store.desired("ag-7").expect("read").placements[0], v2);
            assert_eq!(store.desired("ag-70").expect("read").placements[0], v1);
            store.db.flush().expect("flush");
        }
        // Reopened: the same states, sharing their placements again.
        let store = crate::store::reopen(dir.path());
        let a = store.desired("ag-1").expect("read");
        let b = store.desired("ag-2").expect("read");
        assert_eq!(a.generation, 3);
        assert!(Arc::ptr_eq(&a.placements[0], &b.placements[0]));
        assert_eq!(store.desired("ag-99").expect("read").placements[0], v1);
        assert_eq!(store.desired("ag-none").expect("read").generation, 0);
        // The last agent on v1 moves on: v1 is gone from the tree.
        let v2 = a.placements[0].clone();
        let rest: Vec<(String, Arc<DesiredRecord>)> = (50..100)
            .map(|i| (format!("ag-{i}"), state(4, &[&v2])))
            .collect();
        store.put_desired(&rest, |_| {}).expect("put");
        assert_eq!(store.desired_parts.len(), 1);
        // Emptied: nothing stored.
        let empty: Vec<(String, Arc<DesiredRecord>)> = (0..100)
            .map(|i| (format!("ag-{i}"), state(5, &[])))
            .collect();
        store.put_desired(&empty, |_| {}).expect("put");
        assert_eq!(store.desired_parts.len(), 0);
    }

    #[test]
    fn a_placement_released_and_taken_again_in_one_write_stays_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 8 << 20).expect("open");
        let v1 = placement("st-a", "v1");
        put(&store, &[("ag-1", state(1, &[&v1]))]);
        put(
            &store,
            &[("ag-1", state(2, &[])), ("ag-2", state(1, &[&v1]))],
        );
        assert_eq!(store.desired_parts.len(), 1);
        drop(store);
        let store = crate::store::reopen(dir.path());
        assert_eq!(store.desired("ag-2").expect("read").placements[0], v1);
    }

    #[test]
    fn records_with_inline_placements_are_read_and_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v1 = placement("st-a", "v1");
        {
            let store = Store::open(dir.path(), 8 << 20).expect("open");
            // As earlier versions wrote them: the placement inside the record.
            for agent in ["ag-1", "ag-2"] {
                let inline = serde_json::json!({
                    "generation": 7,
                    "placements": [&*v1],
                    "history": ["st-a"],
                });
                store
                    .desired
                    .insert(agent, serde_json::to_vec(&inline).expect("json"))
                    .expect("insert");
            }
            let read = store.desired("ag-1").expect("read");
            assert_eq!(read.generation, 7);
            assert_eq!(read.placements, vec![v1.clone()]);
            assert_eq!(store.desired_parts.len(), 1);
            store.db.flush().expect("flush");
        }
        let store = crate::store::reopen(dir.path());
        let raw = store.desired.get("ag-2").expect("get").expect("present");
        let stored: StoredDesired = serde_json::from_slice(&raw).expect("json");
        assert!(stored.placements.is_empty() && stored.parts.len() == 1);
        assert_eq!(store.desired("ag-2").expect("read").placements, vec![v1]);
    }

    #[test]
    fn a_record_naming_a_missing_placement_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 8 << 20).expect("open");
        let dangling = serde_json::json!({"generation": 3, "parts": ["00ff"], "history": []});
        store
            .desired
            .insert("ag-1", serde_json::to_vec(&dangling).expect("json"))
            .expect("insert");
        let err = store.desired("ag-1").expect_err("dangling part");
        assert!(err.to_string().contains("00ff"), "{err}");
    }
}
