//! Enrolled agents: whole in memory, written through to the tree.
//!
//! The scheduler reads every agent on every pass and every session writes
//! its agent's record on each acknowledgement; decoding ten thousand
//! records per pass, and decoding and re-encoding a whole record per ack,
//! were most of the controller's work during a fleet-wide update. Here a
//! pass reads memory, and an acknowledged generation is recorded in memory
//! and written later, with the others since, as eight bytes in a tree of
//! its own (`acks`), merged into the records when they are loaded.

use super::{decode, encode, AgentRecord, Store, StoreResult};
use sled::transaction::{ConflictableTransactionError, Transactional};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Every agent record by id, and the agents whose acknowledged generation
/// is not written yet; one entry per enrolled agent, so bounded by the
/// fleet. Kept in the store's [`Resident`](super::resident::Resident): no
/// compare-and-swap is needed, and memory and the tree agree but for acks
/// not written yet.
#[derive(Default)]
pub(super) struct Agents {
    records: BTreeMap<String, Arc<AgentRecord>>,
    unwritten_acks: BTreeSet<String>,
}

/// An acknowledged generation as stored in `acks`.
fn generation_of(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

impl Store {
    /// Runs `f` on every agent record, loading them first on first use.
    fn with_agents<T>(&self, f: impl FnOnce(&mut Agents) -> StoreResult<T>) -> StoreResult<T> {
        let load = || {
            Ok(Agents {
                records: self.load_agents()?,
                unwritten_acks: BTreeSet::new(),
            })
        };
        self.agent_cache.with(load, f)
    }

    fn load_agents(&self) -> StoreResult<BTreeMap<String, Arc<AgentRecord>>> {
        let mut records = BTreeMap::new();
        for entry in self.agents.iter() {
            let (key, value) = entry?;
            let mut agent: AgentRecord = decode("agents", &key, &value)?;
            if let Some(acked) = self.acks.get(&key)?.as_deref().and_then(generation_of) {
                agent.acked_generation = agent.acked_generation.max(acked);
            }
            records.insert(agent.agent_id.clone(), Arc::new(agent));
        }
        Ok(records)
    }

    /// Stores a newly enrolled agent and indexes its certificate and its
    /// instance id (the newest agent of an instance wins the index).
    pub fn insert_agent(&self, agent: &AgentRecord) -> StoreResult<()> {
        self.with_agents(|Agents { records, .. }| {
            let result = (&self.agents, &self.agent_certs, &self.agent_instances).transaction(
                |(agents, certs, instances)| {
                    instances.insert(agent.instance_id.as_bytes(), agent.agent_id.as_bytes())?;
                    agents.insert(
                        agent.agent_id.as_bytes(),
                        encode("agents", agent).map_err(ConflictableTransactionError::Abort)?,
                    )?;
                    certs.insert(agent.cert_fingerprint.as_bytes(), agent.agent_id.as_bytes())?;
                    Ok(())
                },
            );
            super::stacks::flatten(result)?;
            records.insert(agent.agent_id.clone(), Arc::new(agent.clone()));
            Ok(())
        })
    }

    /// Writes an agent record back whole (keeping a newer acknowledged
    /// generation than the one it was read with).
    pub fn put_agent(&self, agent: &AgentRecord) -> StoreResult<()> {
        self.with_agents(|Agents { records, .. }| {
            let mut agent = agent.clone();
            if let Some(current) = records.get(&agent.agent_id) {
                agent.acked_generation = agent.acked_generation.max(current.acked_generation);
            }
            self.agents
                .insert(agent.agent_id.as_bytes(), encode("agents", &agent)?)?;
            records.insert(agent.agent_id.clone(), Arc::new(agent));
            Ok(())
        })
    }

    /// Changes one agent's record; concurrent writers (sessions, the
    /// scheduler, REST) are serialised, so none loses another's change.
    pub fn update_agent<F>(&self, agent_id: &str, mut change: F) -> StoreResult<Option<AgentRecord>>
    where
        F: FnMut(&mut AgentRecord),
    {
        self.with_agents(|Agents { records, .. }| {
            let Some(current) = records.get(agent_id) else {
                return Ok(None);
            };
            let mut agent = AgentRecord::clone(current);
            change(&mut agent);
            self.agents
                .insert(agent_id.as_bytes(), encode("agents", &agent)?)?;
            records.insert(agent_id.to_owned(), Arc::new(agent.clone()));
            Ok(Some(agent))
        })
    }

    /// Records that an agent acknowledged `generation` (an older one than
    /// recorded changes nothing) and returns the agent's record (`None`:
    /// unknown). It is written by the next [`Store::write_acks`] (the
    /// scheduler's, at least every tick), off every caller's path: an ack
    /// lost in a crash costs nothing, as a reconnecting agent's hello says
    /// which generation it runs and until then the scheduler assumes the
    /// older one (it keeps waiting for containers it may still run).
    pub fn record_ack(
        &self,
        agent_id: &str,
        generation: u64,
    ) -> StoreResult<Option<Arc<AgentRecord>>> {
        self.with_agents(|agents| {
            let Some(current) = agents.records.get_mut(agent_id) else {
                return Ok(None);
            };
            if generation > current.acked_generation {
                Arc::make_mut(current).acked_generation = generation;
                agents.unwritten_acks.insert(agent_id.to_owned());
            }
            Ok(Some(current.clone()))
        })
    }

    /// Writes the acknowledged generations recorded since the last call,
    /// in one batch. Returns how many. The batch is taken under the agents'
    /// lock and written outside it, so sessions recording acks meanwhile
    /// never wait for the disk.
    pub fn write_acks(&self) -> StoreResult<usize> {
        // It guards no data, so a poisoned lock is as good as any.
        let _order = self
            .ack_writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let taken = self.agent_cache.if_loaded(|agents| {
            let mut batch = sled::Batch::default();
            let written = agents.unwritten_acks.len();
            for agent_id in std::mem::take(&mut agents.unwritten_acks) {
                if let Some(agent) = agents.records.get(&agent_id) {
                    batch.insert(agent_id.as_bytes(), &agent.acked_generation.to_be_bytes());
                }
            }
            (batch, written)
        });
        let Some((batch, written)) = taken else {
            return Ok(0);
        };
        if written > 0 {
            self.acks.apply_batch(batch)?;
        }
        Ok(written)
    }

    /// One agent.
    pub fn agent(&self, agent_id: &str) -> StoreResult<Option<AgentRecord>> {
        self.with_agents(|agents| Ok(agents.records.get(agent_id).map(|a| AgentRecord::clone(a))))
    }

    /// The agent a client certificate was issued to.
    pub fn agent_by_cert(&self, fingerprint: &str) -> StoreResult<Option<AgentRecord>> {
        match self.agent_certs.get(fingerprint.as_bytes())? {
            Some(id) => self.agent(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// The agent most recently enrolled for an instance id.
    pub fn agent_by_instance(&self, instance_id: &str) -> StoreResult<Option<AgentRecord>> {
        match self.agent_instances.get(instance_id.as_bytes())? {
            Some(id) => self.agent(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// Every agent, ordered by id (shared: a pass over ten thousand
    /// agents copies none of them).
    pub fn agents(&self) -> StoreResult<Vec<Arc<AgentRecord>>> {
        self.with_agents(|agents| Ok(agents.records.values().cloned().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AgentState;

    fn agent(id: &str) -> AgentRecord {
        AgentRecord {
            cert_fingerprint: format!("fp-{id}"),
            ..AgentRecord::for_test(id)
        }
    }

    #[test]
    fn records_and_acks_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), 8 << 20).expect("open");
            store.insert_agent(&agent("ag-1")).expect("insert");
            store.insert_agent(&agent("ag-2")).expect("insert");
            let acked = store.record_ack("ag-1", 7).expect("ack").expect("known");
            assert_eq!(acked.acked_generation, 7);
            let older = store
                .record_ack("ag-1", 5)
                .expect("older ack")
                .expect("known");
            assert_eq!(older.acked_generation, 7);
            assert!(store.record_ack("ag-none", 5).expect("unknown").is_none());
            let changed = store
                .update_agent("ag-2", |a| a.state = AgentState::Lost)
                .expect("update")
                .expect("known");
            assert_eq!(changed.state, AgentState::Lost);
            assert_eq!(
                store
                    .agent("ag-1")
                    .expect("read")
                    .map(|a| a.acked_generation),
                Some(7)
            );
            assert!(store
                .update_agent("ag-none", |_| {})
                .expect("update")
                .is_none());
            assert_eq!(store.write_acks().expect("write"), 1);
            assert_eq!(store.write_acks().expect("nothing new"), 0);
            store.db.flush().expect("flush");
        }
        let store = crate::store::reopen(dir.path());
        let agents = store.agents().expect("agents");
        let ids: Vec<(&str, u64, AgentState)> = agents
            .iter()
            .map(|a| (a.agent_id.as_str(), a.acked_generation, a.state))
            .collect();
        assert_eq!(
            ids,
            [
                ("ag-1", 7, AgentState::Connected),
                ("ag-2", 0, AgentState::Lost)
            ]
        );
        assert_eq!(
            store
                .agent_by_cert("fp-ag-2")
                .expect("read")
                .map(|a| a.agent_id),
            Some("ag-2".into())
        );
    }
}
