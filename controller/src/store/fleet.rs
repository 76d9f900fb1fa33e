//! Join tokens, placements and the idempotent application of status
//! reports.

use super::{
    decode, encode, get, pair_key, scan, InstanceStatusRecord, JoinTokenRecord, Store, StoreError,
    StoreResult,
};
use sled::transaction::{ConflictableTransactionError, Transactional};

/// ((stack id, flag), agent ids): one configuration's placement.
pub type Assignment = ((String, String), Vec<String>);

/// What [`Store::use_join_token`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    Accepted(Box<JoinTokenRecord>),
    Unknown,
    Expired,
    Revoked,
    UsedUp,
}

/// One status report ready to apply: the instance record and the event.
pub struct StatusWrite {
    pub seq: u64,
    pub instance: InstanceStatusRecord,
    pub event_kind: &'static str,
    pub event_data: serde_json::Value,
}

impl Store {
    /// Stores a join token.
    pub fn insert_join_token(&self, token: &JoinTokenRecord) -> StoreResult<()> {
        self.join_tokens
            .insert(token.token_sha256.as_bytes(), encode("join_tokens", token)?)?;
        Ok(())
    }

    /// The join token with this digest, without spending a use.
    pub fn join_token(&self, digest: &str) -> StoreResult<Option<JoinTokenRecord>> {
        get(&self.join_tokens, "join_tokens", digest.as_bytes())
    }

    /// Every join token.
    pub fn join_tokens(&self) -> StoreResult<Vec<JoinTokenRecord>> {
        scan(&self.join_tokens, "join_tokens", b"")
    }

    /// Revokes the join token with this public id; returns it.
    pub fn revoke_join_token(&self, id: &str, now_ms: i64) -> StoreResult<Option<JoinTokenRecord>> {
        let Some(token) = self.join_tokens()?.into_iter().find(|t| t.id == id) else {
            return Ok(None);
        };
        super::update(
            &self.join_tokens,
            "join_tokens",
            token.token_sha256.as_bytes(),
            |t: &mut JoinTokenRecord| {
                t.revoked_ms.get_or_insert(now_ms);
            },
        )
    }

    /// Spends one use of the token with this digest, atomically.
    pub fn use_join_token(&self, digest: &str, now_ms: i64) -> StoreResult<JoinOutcome> {
        let mut outcome = JoinOutcome::Unknown;
        super::update(
            &self.join_tokens,
            "join_tokens",
            digest.as_bytes(),
            |t: &mut JoinTokenRecord| {
                outcome = if t.revoked_ms.is_some() {
                    JoinOutcome::Revoked
                } else if t.expires_ms <= now_ms {
                    JoinOutcome::Expired
                } else if t.uses >= t.max_uses {
                    JoinOutcome::UsedUp
                } else {
                    t.uses += 1;
                    JoinOutcome::Accepted(Box::new(t.clone()))
                };
            },
        )?;
        Ok(outcome)
    }

    /// The agents a configuration is assigned to, in assignment order.
    pub fn assignment(&self, stack_id: &str, flag: &str) -> StoreResult<Vec<String>> {
        Ok(get(&self.assignments, "assignments", &pair_key(stack_id, flag))?.unwrap_or_default())
    }

    /// Sets (or, when empty, clears) a configuration's assignment.
    pub fn put_assignment(&self, stack_id: &str, flag: &str, agents: &[String]) -> StoreResult<()> {
        let key = pair_key(stack_id, flag);
        if agents.is_empty() {
            self.assignments.remove(key)?;
        } else {
            self.assignments
                .insert(key, encode("assignments", &agents)?)?;
        }
        Ok(())
    }

    /// Every assignment: ((stack, flag), agents).
    pub fn assignments(&self) -> StoreResult<Vec<Assignment>> {
        self.assignments
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                let agents: Vec<String> = decode("assignments", &key, &value)?;
                let text = String::from_utf8_lossy(&key);
                let (stack, flag) = text.split_once('\0').unwrap_or((&text, ""));
                Ok(((stack.to_owned(), flag.to_owned()), agents))
            })
            .collect()
    }

    /// The highest status sequence number applied for an agent.
    pub fn agent_seq(&self, agent_id: &str) -> StoreResult<u64> {
        Ok(self
            .agent_seq
            .get(agent_id.as_bytes())?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Applies status reports exactly once: each report whose sequence
    /// number is above the agent's last applied one is written (instance
    /// status + event) together with the new sequence number (at least
    /// `up_to`), in one transaction. Returns how many were new.
    pub fn apply_statuses(
        &self,
        agent_id: &str,
        time: &str,
        writes: &[StatusWrite],
        up_to: u64,
    ) -> StoreResult<usize> {
        let _order = self.event_order();
        let newest = std::cell::Cell::new(0u64);
        let result = (&self.agent_seq, &self.instances, &self.events).transaction(
            |(seqs, instances, events)| {
                let mut last = seqs
                    .get(agent_id.as_bytes())?
                    .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                    .map_or(0, u64::from_be_bytes);
                let mut applied = 0;
                for write in writes {
                    if write.seq <= last {
                        continue;
                    }
                    let instance = &write.instance;
                    let key = super::stacks::instance_key(
                        &instance.stack_id,
                        &instance.instance_id,
                        instance.flag.as_deref(),
                    );
                    instances.insert(
                        key,
                        encode("instances", instance)
                            .map_err(ConflictableTransactionError::Abort)?,
                    )?;
                    let event = super::EventRecord {
                        id: events.generate_id()? + 1,
                        time: time.to_owned(),
                        kind: write.event_kind.to_owned(),
                        stack_id: Some(instance.stack_id.clone()),
                        instance_id: Some(instance.instance_id.clone()),
                        data: write.event_data.clone(),
                    };
                    events.insert(
                        &event.id.to_be_bytes(),
                        encode("events", &event).map_err(ConflictableTransactionError::Abort)?,
                    )?;
                    newest.set(event.id);
                    last = write.seq;
                    applied += 1;
                }
                // Reports that were dropped (not written) still count as seen.
                let last = last.max(up_to);
                seqs.insert(agent_id.as_bytes(), &last.to_be_bytes())?;
                Ok(applied)
            },
        );
        let applied = super::stacks::flatten(result).map_err(|err: StoreError| err)?;
        if applied > 0 {
            self.announce_event(newest.get());
        }
        Ok(applied)
    }
}
