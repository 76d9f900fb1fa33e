//! The controller's persistent state, in one sled database under the data dir.
//!
//! Every other module goes through [`Store`]: no sled type leaks out, so the
//! embedded store can be swapped for a distributed one without touching the
//! API or the fleet link. Values are JSON (serde), which keeps the files
//! inspectable and lets records gain fields without a migration.
//!
//! Durability: sled only fsyncs every 500 ms on its own, so every write that
//! is acknowledged to a client is followed by [`Store::flush`] first.

mod agents;
mod clients;
mod deliveries;
mod desired;
mod events;
mod fleet;
mod hooks;
mod pools;
mod records;
mod reporters;
mod resident;
mod stacks;
mod tasks;
mod tokens;

pub use deliveries::{DueDelivery, Queued, QUEUE_FULL};
pub use events::{EventFilter, EventVisibility};
pub use fleet::{Assignment, JoinOutcome, StatusWrite};
pub use hooks::{DeliveryRecord, DeliveryState, HookRecord};
pub use records::*;
pub use reporters::AlmIdOutcome;
pub use stacks::VersionOutcome;

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// What can go wrong with the store. Messages name the tree and key involved,
/// never a value (values may hold secrets).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (usually a running controller) holds the database lock.
    #[error("the store at {path} is in use by another process (is the controller running?)")]
    Locked { path: String },
    /// The database could not be opened, read or written.
    #[error("store I/O failed: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record could not be decoded; the store was written by an
    /// incompatible version or damaged.
    #[error("stored record {tree}/{key} is unreadable: {source}")]
    Corrupt {
        tree: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// A record could not be encoded (a bug, not an input problem).
    #[error("could not encode a {tree} record: {source}")]
    Encode {
        tree: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// Making writes durable failed.
    #[error("store flush failed: {0}")]
    Flush(String),
    /// A conditional write found the record changed or gone.
    #[error("{0}")]
    Conflict(String),
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Handle on the controller's database; cheap to clone (sled handles are `Arc`s).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    commit: flotilla_common::commit::GroupCommit,
    users: sled::Tree,
    clients: sled::Tree,
    tokens: sled::Tree,
    /// Each credential's tokens in issue order (for the token quotas).
    token_owners: sled::Tree,
    stacks: sled::Tree,
    stack_tokens: sled::Tree,
    versions: sled::Tree,
    version_ids: sled::Tree,
    events: sled::Tree,
    instances: sled::Tree,
    agents: sled::Tree,
    agent_certs: sled::Tree,
    agent_instances: sled::Tree,
    join_tokens: sled::Tree,
    desired: sled::Tree,
    assignments: sled::Tree,
    agent_seq: sled::Tree,
    hooks: sled::Tree,
    deliveries: sled::Tree,
    /// Pending deliveries, per hook in event order (see `deliveries.rs`).
    delivery_queue: sled::Tree,
    /// The head of each hook's queue, keyed by due time first.
    delivery_due: sled::Tree,
    /// Each hook's queue length.
    queue_lens: sled::Tree,
    pools: sled::Tree,
    /// Agents' REST tokens: `d:` digest → agent id, `a:` agent id → digest.
    agent_tokens: sled::Tree,
    /// Instance ids the original alm-agent reported, per stack.
    alm_ids: sled::Tree,
    /// Small singletons (the webhook fan-out cursor).
    meta: sled::Tree,
    /// Tasks by id, and the pending ones by `stack \0 task` (see `tasks.rs`).
    tasks: sled::Tree,
    pending_tasks: sled::Tree,
    /// Held while an event id is taken and the event written, so events
    /// become visible in id order and a follower reading "after id N"
    /// never skips one that lands late.
    event_order: std::sync::Arc<std::sync::Mutex<()>>,
    /// The newest event id, for followers of the event stream.
    latest_event: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Held by every writer of the delivery queue trees.
    delivery_lock: std::sync::Arc<std::sync::Mutex<()>>,
    /// Placements named by desired states, each stored once (see
    /// `desired.rs`).
    desired_parts: sled::Tree,
    /// Each agent's acknowledged generation (see `agents.rs`).
    acks: sled::Tree,
    /// Held while a batch of acks is taken and written, so batches land
    /// in the order they were taken and no older one overwrites a newer.
    ack_writer: std::sync::Arc<std::sync::Mutex<()>>,
    /// Held from a change of desired states in memory to its write (see
    /// `desired.rs`).
    desired_writer: std::sync::Arc<std::sync::Mutex<()>>,
    /// Every agent record, in memory (see `agents.rs`).
    agent_cache: resident::Resident<agents::Agents>,
    /// Every desired state, in memory (see `desired.rs`).
    desired_cache: resident::Resident<desired::Loaded>,
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    ///
    /// `cache_bytes` bounds sled's page cache; its 1 GiB default is far more
    /// than a controller's working set.
    pub fn open(dir: &Path, cache_bytes: u64) -> StoreResult<Self> {
        let started = Instant::now();
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|err| match err {
                sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
                    StoreError::Locked {
                        path: dir.display().to_string(),
                    }
                }
                other => StoreError::Sled(other),
            })?;
        let flusher = db.clone();
        let commit = flotilla_common::commit::GroupCommit::start("store-flush", move || {
            flusher.flush().map(drop).map_err(|err| err.to_string())
        })
        .map_err(|err| StoreError::Sled(sled::Error::Io(err)))?;
        let store = Store {
            commit,
            users: db.open_tree("users")?,
            clients: db.open_tree("clients")?,
            tokens: db.open_tree("tokens")?,
            token_owners: db.open_tree("token_owners")?,
            stacks: db.open_tree("stacks")?,
            stack_tokens: db.open_tree("stack_tokens")?,
            versions: db.open_tree("versions")?,
            version_ids: db.open_tree("version_ids")?,
            events: db.open_tree("events")?,
            instances: db.open_tree("instances")?,
            agents: db.open_tree("agents")?,
            agent_certs: db.open_tree("agent_certs")?,
            agent_instances: db.open_tree("agent_instances")?,
            join_tokens: db.open_tree("join_tokens")?,
            desired: db.open_tree("desired")?,
            assignments: db.open_tree("assignments")?,
            agent_seq: db.open_tree("agent_seq")?,
            hooks: db.open_tree("hooks")?,
            deliveries: db.open_tree("deliveries")?,
            delivery_queue: db.open_tree("delivery_queue")?,
            delivery_due: db.open_tree("delivery_due")?,
            queue_lens: db.open_tree("queue_lens")?,
            pools: db.open_tree("pools")?,
            agent_tokens: db.open_tree("agent_tokens")?,
            alm_ids: db.open_tree("alm_ids")?,
            meta: db.open_tree("meta")?,
            tasks: db.open_tree("tasks")?,
            pending_tasks: db.open_tree("pending_tasks")?,
            event_order: Default::default(),
            latest_event: std::sync::Arc::new(tokio::sync::watch::Sender::new(0)),
            delivery_lock: Default::default(),
            desired_parts: db.open_tree("desired_parts")?,
            acks: db.open_tree("acks")?,
            ack_writer: Default::default(),
            desired_writer: Default::default(),
            agent_cache: Default::default(),
            desired_cache: Default::default(),
            db,
        };
        tracing::info!(
            path = %dir.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            recovered = store.db.was_recovered(),
            "store opened"
        );
        Ok(store)
    }

    /// Forces everything written so far to disk. Call before acknowledging a
    /// write to anyone. Concurrent callers share one flush (group commit).
    pub async fn flush(&self) -> StoreResult<()> {
        self.commit.flush().await.map_err(StoreError::Flush)
    }

    /// Bytes the database takes on disk, for metrics and the health check.
    pub fn size_on_disk(&self) -> StoreResult<u64> {
        Ok(self.db.size_on_disk()?)
    }
}

/// Trees whose records are shown to operators or sent out (events and
/// the webhook payloads made from them, statuses and their reasons, agents'
/// labels, delivery errors): every string in them has URL credentials cut
/// out on the way in, here, so no writer can forget to. Template versions
/// and hooks keep their URLs whole: agents and deliveries need them.
const REDACTED_TREES: [&str; 5] = ["events", "instances", "stacks", "agents", "deliveries"];

/// Encodes a record for `tree` (redacted for the [`REDACTED_TREES`]).
fn encode<T: Serialize>(tree: &'static str, value: &T) -> StoreResult<Vec<u8>> {
    let fail = |source| StoreError::Encode { tree, source };
    if REDACTED_TREES.contains(&tree) {
        let mut json = serde_json::to_value(value).map_err(fail)?;
        flotilla_common::redact::strip_json_credentials(&mut json);
        return serde_json::to_vec(&json).map_err(fail);
    }
    serde_json::to_vec(value).map_err(fail)
}

/// Decodes a record read from `tree` at `key`.
fn decode<T: DeserializeOwned>(tree: &'static str, key: &[u8], bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

/// Reads and decodes one record, `None` when absent.
fn get<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    key: &[u8],
) -> StoreResult<Option<T>> {
    tree.get(key)?
        .map(|bytes| decode(name, key, &bytes))
        .transpose()
}

/// Decodes every record under `prefix`, in key order.
fn scan<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    prefix: &[u8],
) -> StoreResult<Vec<T>> {
    tree.scan_prefix(prefix)
        .map(|entry| {
            let (key, value) = entry?;
            decode(name, &key, &value)
        })
        .collect()
}

/// `a \0 b`: composite keys whose parts never contain NUL (ids are ASCII).
fn pair_key(a: &str, b: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(a.len() + b.len() + 1);
    key.extend_from_slice(a.as_bytes());
    key.push(0);
    key.extend_from_slice(b.as_bytes());
    key
}

/// The prefix of every [`pair_key`] whose first part is `a`.
fn pair_prefix(a: &str) -> Vec<u8> {
    let mut key = a.as_bytes().to_vec();
    key.push(0);
    key
}

/// Read-modify-write of one record with compare-and-swap, retried when a
/// concurrent writer got there first. Returns the new record, or `None` when
/// the key is absent (nothing is written then). A record that fails to decode
/// is an error and is left untouched.
fn update<T, F>(
    tree: &sled::Tree,
    name: &'static str,
    key: &[u8],
    mut change: F,
) -> StoreResult<Option<T>>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(&mut T),
{
    loop {
        let Some(old) = tree.get(key)? else {
            return Ok(None);
        };
        let mut record: T = decode(name, key, &old)?;
        change(&mut record);
        let new = encode(name, &record)?;
        if tree.compare_and_swap(key, Some(&old), Some(new))?.is_ok() {
            return Ok(Some(record));
        }
    }
}

/// Opens a store a test just dropped: sled's own flusher thread may hold
/// the file lock for a moment after the last handle goes, so a reopen
/// waits for it (up to 5 s) rather than fail.
#[cfg(test)]
pub(crate) fn reopen(dir: &std::path::Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir, 8 << 20) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.expect("reopen"),
        }
    }
}
