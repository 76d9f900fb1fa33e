//! Who is connected right now, and the channels that carry desired state
//! to their sessions. In memory only: the store holds what must survive.

use crate::store::DesiredRecord;
use flotilla_common::wire::messages::HostFacts;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::watch;

/// A connected agent's live session.
pub struct Live {
    /// Distinguishes successive connections of one agent.
    pub session_id: u64,
    pub connection: quinn::Connection,
    pub connected_at: Instant,
    pub last_seen: Instant,
    pub facts: Option<HostFacts>,
    /// The session's writer waits on this for new desired states.
    pub desired: watch::Sender<Arc<DesiredRecord>>,
    /// Other messages for the agent (operator commands) go to the writer.
    pub out: tokio::sync::mpsc::Sender<flotilla_common::wire::messages::ControllerMessage>,
}

/// The live sessions, by agent id.
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Live>>,
    next_session: AtomicU64,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers a session, returning the connection it replaced (which the
    /// caller closes): an agent has at most one session.
    pub fn register(&self, agent_id: &str, live: Live) -> Option<quinn::Connection> {
        self.lock()
            .insert(agent_id.to_owned(), live)
            .map(|old| old.connection)
    }

    /// Removes a session if it is still the registered one. Returns whether
    /// it was (a superseded session must not mark its agent lost).
    pub fn unregister(&self, agent_id: &str, session_id: u64) -> bool {
        let mut sessions = self.lock();
        if sessions
            .get(agent_id)
            .is_some_and(|live| live.session_id == session_id)
        {
            sessions.remove(agent_id);
            true
        } else {
            false
        }
    }

    /// Records traffic from an agent (and new facts, when given).
    pub fn seen(&self, agent_id: &str, facts: Option<HostFacts>) {
        if let Some(live) = self.lock().get_mut(agent_id) {
            live.last_seen = Instant::now();
            if facts.is_some() {
                live.facts = facts;
            }
        }
    }

    /// Hands new desired states to their agents' sessions (those
    /// connected), under one lock however many there are.
    pub fn push_all<'a>(&self, states: impl Iterator<Item = &'a (String, Arc<DesiredRecord>)>) {
        let sessions = self.lock();
        for (agent_id, desired) in states {
            if let Some(live) = sessions.get(agent_id) {
                tracing::debug!(agent_id = %agent_id, generation = desired.generation, "desired state handed to its session");
                live.desired.send_replace(desired.clone());
            }
        }
    }

    /// Sends a message to a connected agent (without waiting: a full queue
    /// is refused). Returns whether it was queued.
    pub fn send(
        &self,
        agent_id: &str,
        message: flotilla_common::wire::messages::ControllerMessage,
    ) -> bool {
        self.lock()
            .get(agent_id)
            .is_some_and(|live| live.out.try_send(message).is_ok())
    }

    /// The connection of a connected agent (to open streams on it).
    pub fn connection(&self, agent_id: &str) -> Option<quinn::Connection> {
        self.lock()
            .get(agent_id)
            .map(|live| live.connection.clone())
    }

    /// Whether the agent has a live session.
    pub fn is_connected(&self, agent_id: &str) -> bool {
        self.lock().contains_key(agent_id)
    }

    /// Every connected agent's id, read under one lock (a pass asks about
    /// every agent; one lock each would contend with every session).
    pub fn connected(&self) -> std::collections::HashSet<String> {
        self.lock().keys().cloned().collect()
    }

    /// (last seen, facts) of a connected agent.
    pub fn snapshot(&self, agent_id: &str) -> Option<(Instant, Option<HostFacts>)> {
        self.lock()
            .get(agent_id)
            .map(|live| (live.last_seen, live.facts.clone()))
    }

    /// Connected agents silent since before `deadline`, with their
    /// connection and session id.
    pub fn silent_since(&self, deadline: Instant) -> Vec<(String, u64, quinn::Connection)> {
        self.lock()
            .iter()
            .filter(|(_, live)| live.last_seen < deadline)
            .map(|(id, live)| (id.clone(), live.session_id, live.connection.clone()))
            .collect()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no agent is connected.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Closes an agent's connection, if it has one.
    pub fn disconnect(&self, agent_id: &str, code: quinn::VarInt, reason: &[u8]) {
        if let Some(live) = self.lock().get(agent_id) {
            live.connection.close(code, reason);
        }
    }

    /// Closes every session (shutdown).
    pub fn close_all(&self, code: quinn::VarInt, reason: &[u8]) {
        for live in self.lock().values() {
            live.connection.close(code, reason);
        }
    }
}
