//! The agent's own store (sled, under `<data dir>/state`): the desired
//! state it was last given, and the outbox of status reports not yet
//! acknowledged by the controller, numbered by a persistent sequence.
//!
//! Every write the controller will rely on is flushed before it is
//! acknowledged or sent: the desired state before its ack, a report before
//! it leaves.
//!
//! It also remembers the images the agent pulled ([`images`]).

pub mod holds;
pub mod images;
pub mod routes;

use flotilla_common::wire::messages::{
    CloudNotice, DesiredState, LifecycleEvent, LifecycleReport, StatusReport,
};
use sled::transaction::{ConflictableTransactionError, Transactional};
use std::path::Path;

const DESIRED: &[u8] = b"desired";
const NEXT_SEQ: &[u8] = b"next_seq";
const NEXT_LIFECYCLE: &[u8] = b"next_lifecycle";
const API_URL: &[u8] = b"api_url";
const DRAINED: &[u8] = b"drained";
/// Prefix of the per-action record of notices seen (`notice:terminate`).
const NOTICE_PREFIX: &str = "notice:";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the agent state at {0} is in use by another process (is the agent already running?)")]
    Locked(String),
    #[error("agent store I/O failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("agent store flush failed: {0}")]
    Flush(String),
    #[error("agent store record unreadable: {0}")]
    Corrupt(String),
}

/// A status transition before it gets its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub stack_id: String,
    pub flag: String,
    pub version_id: String,
    pub status: flotilla_common::status::ContainerStatus,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    pub time_ms: i64,
    /// The git commit the container serves, for code deploys.
    pub commit: Option<String>,
}

/// Handle on the agent's store; cheap to clone.
#[derive(Clone)]
pub struct AgentStore {
    commit: flotilla_common::commit::GroupCommit,
    meta: sled::Tree,
    outbox: sled::Tree,
    containers: sled::Tree,
    lifecycle: sled::Tree,
    images: sled::Tree,
    holds: sled::Tree,
    routes: sled::Tree,
}

/// A container the agent is about to create or has created, recorded
/// before the create call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    pub stack_id: String,
    pub flag: String,
    pub version_id: String,
    pub spec_hash: String,
    #[serde(default)]
    pub container_id: Option<String>,
}

fn seq_of(bytes: Option<sled::IVec>) -> u64 {
    bytes
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(1, u64::from_be_bytes)
}

/// A transaction's result with its two error layers made one.
fn flatten<T>(
    result: Result<T, sled::transaction::TransactionError<StateError>>,
) -> Result<T, StateError> {
    result.map_err(|err| match err {
        sled::transaction::TransactionError::Abort(err) => err,
        sled::transaction::TransactionError::Storage(err) => StateError::Sled(err),
    })
}

/// Up to `limit` records of a numbered outbox above `after`, in order.
fn entries_after<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    after: u64,
    limit: usize,
) -> Result<Vec<T>, StateError> {
    tree.range(after.saturating_add(1).to_be_bytes()..)
        .take(limit)
        .map(|entry| {
            let (_, value) = entry?;
            serde_json::from_slice(&value).map_err(|err| StateError::Corrupt(err.to_string()))
        })
        .collect()
}

/// Drops a numbered outbox's records up to `number`; returns how many.
fn remove_up_to(tree: &sled::Tree, number: u64) -> Result<usize, StateError> {
    let mut removed = 0;
    for entry in tree.range(..=number.to_be_bytes()) {
        let (key, _) = entry?;
        tree.remove(key)?;
        removed += 1;
    }
    Ok(removed)
}

impl AgentStore {
    /// Opens the store with a small cache (an agent's state is tiny).
    pub fn open(dir: &Path) -> Result<AgentStore, StateError> {
        flotilla_common::files::private_dir(dir)
            .map_err(|err| StateError::Sled(sled::Error::Io(err)))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(4 * 1024 * 1024)
            .open()
            .map_err(|err| match err {
                sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
                    StateError::Locked(dir.display().to_string())
                }
                other => StateError::Sled(other),
            })?;
        // The desired state holds stack tokens and the specs' secrets.
        flotilla_common::files::private_tree(dir)
            .map_err(|err| StateError::Sled(sled::Error::Io(err)))?;
        let flusher = db.clone();
        let commit = flotilla_common::commit::GroupCommit::start("agent-flush", move || {
            flusher.flush().map(drop).map_err(|err| err.to_string())
        })
        .map_err(|err| StateError::Sled(sled::Error::Io(err)))?;
        Ok(AgentStore {
            commit,
            meta: db.open_tree("meta")?,
            outbox: db.open_tree("outbox")?,
            containers: db.open_tree("containers")?,
            lifecycle: db.open_tree("lifecycle")?,
            images: db.open_tree("images")?,
            holds: db.open_tree("holds")?,
            routes: db.open_tree("routes")?,
        })
    }

    /// The last desired state received, if any.
    pub fn desired(&self) -> Result<Option<DesiredState>, StateError> {
        self.meta
            .get(DESIRED)?
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|err| StateError::Corrupt(err.to_string()))
            })
            .transpose()
    }

    /// Persists a desired state (flushed: the ack that follows is a promise).
    pub async fn put_desired(&self, desired: &DesiredState) -> Result<(), StateError> {
        let bytes =
            serde_json::to_vec(desired).map_err(|err| StateError::Corrupt(err.to_string()))?;
        self.meta.insert(DESIRED, bytes)?;
        self.commit.flush().await.map_err(StateError::Flush)?;
        Ok(())
    }

    /// Gives a transition the next sequence number and stores it in the
    /// outbox, atomically and flushed.
    pub async fn push(&self, transition: Transition) -> Result<StatusReport, StateError> {
        let result = (&self.meta, &self.outbox).transaction(|(meta, outbox)| {
            let seq = seq_of(meta.get(NEXT_SEQ)?);
            let report = StatusReport {
                seq,
                stack_id: transition.stack_id.clone(),
                flag: transition.flag.clone(),
                version_id: transition.version_id.clone(),
                status: transition.status,
                exit_code: transition.exit_code,
                reason: transition.reason.clone(),
                time_ms: transition.time_ms,
                commit: transition.commit.clone(),
            };
            let bytes = serde_json::to_vec(&report).map_err(|err| {
                ConflictableTransactionError::Abort(StateError::Corrupt(err.to_string()))
            })?;
            outbox.insert(&seq.to_be_bytes(), bytes)?;
            meta.insert(NEXT_SEQ, &(seq + 1).to_be_bytes())?;
            Ok(report)
        });
        let report = flatten(result)?;
        self.commit.flush().await.map_err(StateError::Flush)?;
        Ok(report)
    }

    /// Reports with a sequence number above `after`, oldest first.
    pub fn pending(&self, after: u64, limit: usize) -> Result<Vec<StatusReport>, StateError> {
        entries_after(&self.outbox, after, limit)
    }

    /// Drops every report up to `seq` (the controller has them).
    pub fn ack(&self, seq: u64) -> Result<usize, StateError> {
        remove_up_to(&self.outbox, seq)
    }

    /// The highest sequence number handed out so far.
    pub fn last_seq(&self) -> Result<u64, StateError> {
        Ok(seq_of(self.meta.get(NEXT_SEQ)?) - 1)
    }

    /// How many reports wait for the controller.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Records a container before it is created (flushed: the record must
    /// survive a crash right after the create call).
    pub async fn put_container(&self, record: &ContainerRecord) -> Result<(), StateError> {
        self.note_container(record)?;
        self.commit.flush().await.map_err(StateError::Flush)
    }

    /// Updates a container's record (its id, once known) without waiting
    /// for the disk: the name recorded earlier is what recovery relies on.
    pub fn note_container(&self, record: &ContainerRecord) -> Result<(), StateError> {
        let bytes =
            serde_json::to_vec(record).map_err(|err| StateError::Corrupt(err.to_string()))?;
        self.containers.insert(record.name.as_bytes(), bytes)?;
        Ok(())
    }

    /// Forgets a container that was removed.
    pub fn remove_container(&self, name: &str) -> Result<(), StateError> {
        self.containers.remove(name.as_bytes())?;
        Ok(())
    }

    /// Every recorded container.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>, StateError> {
        self.containers
            .iter()
            .map(|entry| {
                let (_, value) = entry?;
                serde_json::from_slice(&value).map_err(|err| StateError::Corrupt(err.to_string()))
            })
            .collect()
    }

    /// Numbers a lifecycle event and stores it in the lifecycle outbox,
    /// atomically and flushed. A notice is also remembered by its action
    /// (so the same notice is not reported twice, even across restarts),
    /// a drain as done.
    pub async fn push_lifecycle(
        &self,
        time_ms: i64,
        event: LifecycleEvent,
    ) -> Result<LifecycleReport, StateError> {
        let result = (&self.meta, &self.lifecycle).transaction(|(meta, lifecycle)| {
            let id = seq_of(meta.get(NEXT_LIFECYCLE)?);
            let report = LifecycleReport {
                id,
                time_ms,
                event: event.clone(),
            };
            let bytes = serde_json::to_vec(&report).map_err(|err| {
                ConflictableTransactionError::Abort(StateError::Corrupt(err.to_string()))
            })?;
            lifecycle.insert(&id.to_be_bytes(), bytes.clone())?;
            meta.insert(NEXT_LIFECYCLE, &(id + 1).to_be_bytes())?;
            match &event {
                LifecycleEvent::Notice(notice) => {
                    let key = format!("{NOTICE_PREFIX}{}", notice.action);
                    meta.insert(key.as_bytes(), bytes)?;
                }
                LifecycleEvent::Drained { .. } => {
                    meta.insert(DRAINED, bytes)?;
                }
            }
            Ok(report)
        });
        let report = flatten(result)?;
        self.commit.flush().await.map_err(StateError::Flush)?;
        Ok(report)
    }

    /// The notice reported for this action, if one was.
    pub fn notice(&self, action: &str) -> Result<Option<(u64, CloudNotice)>, StateError> {
        let key = format!("{NOTICE_PREFIX}{action}");
        let Some(bytes) = self.meta.get(key.as_bytes())? else {
            return Ok(None);
        };
        let report: LifecycleReport =
            serde_json::from_slice(&bytes).map_err(|err| StateError::Corrupt(err.to_string()))?;
        Ok(match report.event {
            LifecycleEvent::Notice(notice) => Some((report.id, notice)),
            LifecycleEvent::Drained { .. } => None,
        })
    }

    /// The notice that ends this VM, if one came (the earliest deadline).
    pub fn final_notice(&self) -> Result<Option<(u64, CloudNotice)>, StateError> {
        let mut found: Option<(u64, CloudNotice)> = None;
        for entry in self.meta.scan_prefix(NOTICE_PREFIX.as_bytes()) {
            let (_, bytes) = entry?;
            let report: LifecycleReport = serde_json::from_slice(&bytes)
                .map_err(|err| StateError::Corrupt(err.to_string()))?;
            if let LifecycleEvent::Notice(notice) = report.event {
                let earlier = found.as_ref().is_none_or(|(_, f)| {
                    notice.deadline_ms.unwrap_or(i64::MAX) < f.deadline_ms.unwrap_or(i64::MAX)
                });
                if notice.is_final() && earlier {
                    found = Some((report.id, notice));
                }
            }
        }
        Ok(found)
    }

    /// Whether this agent has drained (it stopped everything for good).
    pub fn drained(&self) -> Result<bool, StateError> {
        Ok(self.meta.contains_key(DRAINED)?)
    }

    /// Lifecycle reports the controller has not acknowledged, oldest first.
    pub fn pending_lifecycle(&self, after: u64) -> Result<Vec<LifecycleReport>, StateError> {
        entries_after(&self.lifecycle, after, usize::MAX)
    }

    /// Drops lifecycle reports up to `id` (the controller has them).
    pub fn ack_lifecycle(&self, id: u64) -> Result<usize, StateError> {
        remove_up_to(&self.lifecycle, id)
    }

    /// Whether the lifecycle report `id` is still unacknowledged.
    pub fn lifecycle_pending(&self, id: u64) -> bool {
        self.lifecycle
            .contains_key(id.to_be_bytes())
            .unwrap_or(true)
    }

    /// Remembers the controller's REST URL (for the spot fallback while
    /// the link is down).
    pub fn put_api_url(&self, url: Option<&str>) -> Result<(), StateError> {
        match url {
            Some(url) => self.meta.insert(API_URL, url.as_bytes())?,
            None => self.meta.remove(API_URL)?,
        };
        Ok(())
    }

    /// The controller's REST URL, if it told one.
    pub fn api_url(&self) -> Result<Option<String>, StateError> {
        Ok(self
            .meta
            .get(API_URL)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Flushes everything (on shutdown).
    pub async fn flush(&self) -> Result<(), StateError> {
        self.commit.flush().await.map_err(StateError::Flush)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_common::status::ContainerStatus;

    fn transition(flag: &str) -> Transition {
        Transition {
            stack_id: "s".into(),
            flag: flag.into(),
            version_id: "v".into(),
            status: ContainerStatus::Running,
            exit_code: None,
            reason: None,
            time_ms: 1,
            commit: None,
        }
    }

    #[tokio::test]
    async fn the_outbox_numbers_keeps_and_drops_reports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AgentStore::open(dir.path()).expect("open");
        for flag in ["a", "b", "c"] {
            store.push(transition(flag)).await.expect("push");
        }
        assert_eq!(
            store
                .pending(0, 10)
                .expect("pending")
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(store.pending(1, 1).expect("pending")[0].flag, "b");
        assert_eq!(store.ack(2).expect("ack"), 2);
        drop(store);
        // sled's I/O threads may hold the lock file a moment after the last
        // handle is gone (a new process never sees this).
        let mut reopened = AgentStore::open(dir.path());
        for _ in 0..100 {
            if !matches!(reopened, Err(StateError::Locked(_))) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            reopened = AgentStore::open(dir.path());
        }
        let store = reopened.expect("reopen");
        assert_eq!(
            store
                .pending(0, 10)
                .expect("pending")
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            [3]
        );
        assert_eq!(
            store.push(transition("d")).await.expect("push").seq,
            4,
            "numbers are never reused"
        );
        assert_eq!(store.last_seq().expect("seq"), 4);
        let desired = DesiredState {
            generation: 3,
            placements: vec![],
        };
        store.put_desired(&desired).await.expect("desired");
        assert_eq!(store.desired().expect("read"), Some(desired));
    }

    #[tokio::test]
    async fn lifecycle_reports_are_numbered_remembered_and_acked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AgentStore::open(dir.path()).expect("open");
        let notice = |action: &str, deadline| CloudNotice {
            cloud: "aws".into(),
            action: action.into(),
            deadline_ms: Some(deadline),
        };
        store
            .push_lifecycle(1, LifecycleEvent::Notice(notice("rebalance", 50)))
            .await
            .expect("push");
        assert!(store.final_notice().expect("read").is_none());
        let report = store
            .push_lifecycle(2, LifecycleEvent::Notice(notice("terminate", 90)))
            .await
            .expect("push");
        assert_eq!(report.id, 2);
        assert_eq!(
            store.final_notice().expect("read"),
            Some((2, notice("terminate", 90)))
        );
        assert_eq!(
            store.notice("terminate").expect("read").map(|n| n.0),
            Some(2)
        );
        assert!(!store.drained().expect("read"));
        store
            .push_lifecycle(3, LifecycleEvent::Drained { stopped: 1 })
            .await
            .expect("push");
        assert!(store.drained().expect("read"));
        let ids = |s: &AgentStore| {
            s.pending_lifecycle(0)
                .expect("pending")
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&store), [1, 2, 3]);
        assert_eq!(store.ack_lifecycle(2).expect("ack"), 2);
        assert_eq!(ids(&store), [3]);
        assert!(store.lifecycle_pending(3));
        assert!(!store.lifecycle_pending(2));
    }
}

#[cfg(test)]
mod permissions {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn modes(dir: &Path, found: &mut Vec<(std::path::PathBuf, u32)>) {
        for entry in std::fs::read_dir(dir).expect("dir").flatten() {
            let path = entry.path();
            let mode = entry.metadata().expect("meta").permissions().mode() & 0o777;
            if path.is_dir() {
                modes(&path, found);
            }
            found.push((path, mode));
        }
    }

    #[test]
    fn the_store_is_readable_by_the_agent_only() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("state");
        drop(AgentStore::open(&dir).expect("open"));
        let store = AgentStore::open(&dir).expect("reopen");
        drop(store);
        assert_eq!(
            std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o777,
            0o700
        );
        let mut found = Vec::new();
        modes(&dir, &mut found);
        assert!(!found.is_empty());
        for (path, mode) in found {
            let want = if path.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode, want, "{}", path.display());
        }
    }
}
