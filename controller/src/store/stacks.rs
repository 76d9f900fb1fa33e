//! Stacks, their immutable template versions, and what instances report.

use super::{
    decode, encode, get, pair_key, pair_prefix, scan, InstanceStatusRecord, StackRecord,
    StackStatus, Store, StoreError, StoreResult, VersionRecord,
};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

/// What [`Store::add_version`] did.
#[derive(Debug)]
pub enum VersionOutcome {
    /// The version was stored and is now the stack's latest.
    Added(Box<StackRecord>),
    /// There is no such stack.
    NoStack,
    /// The stack is being deleted (or is gone) and takes no more versions.
    Deleting(StackStatus),
}

/// `stack \0 instance \0 flag`: one status per container (an instance may
/// run several configurations of a stack).
pub(super) fn instance_key(stack_id: &str, instance_id: &str, flag: Option<&str>) -> Vec<u8> {
    let mut key = pair_key(stack_id, instance_id);
    key.push(0);
    key.extend_from_slice(flag.unwrap_or("").as_bytes());
    key
}

fn version_key(stack_id: &str, seq: u64) -> Vec<u8> {
    let mut key = pair_prefix(stack_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub(super) fn tx_encode<T: serde::Serialize>(
    tree: &'static str,
    value: &T,
) -> Result<Vec<u8>, ConflictableTransactionError<StoreError>> {
    encode(tree, value).map_err(ConflictableTransactionError::Abort)
}

pub(super) fn flatten<T>(result: Result<T, TransactionError<StoreError>>) -> StoreResult<T> {
    result.map_err(|err| match err {
        TransactionError::Abort(err) => err,
        TransactionError::Storage(err) => StoreError::Sled(err),
    })
}

impl Store {
    /// Stores a new stack with its first version, atomically, indexing the
    /// stack's `auth_token` by `token_digest` so agents presenting it are
    /// recognised without knowing the stack first.
    pub fn create_stack(
        &self,
        stack: &StackRecord,
        token_digest: &str,
        version: &VersionRecord,
    ) -> StoreResult<()> {
        let result = (
            &self.stacks,
            &self.versions,
            &self.version_ids,
            &self.stack_tokens,
        )
            .transaction(|(stacks, versions, version_ids, stack_tokens)| {
                if stacks.get(stack.stack_id.as_bytes())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(StoreError::Conflict(
                        format!("stack {} already exists", stack.stack_id),
                    )));
                }
                stacks.insert(stack.stack_id.as_bytes(), tx_encode("stacks", stack)?)?;
                versions.insert(
                    version_key(&stack.stack_id, version.seq),
                    tx_encode("versions", version)?,
                )?;
                version_ids.insert(
                    pair_key(&stack.stack_id, &version.version_id),
                    &version.seq.to_be_bytes(),
                )?;
                stack_tokens.insert(token_digest.as_bytes(), stack.stack_id.as_bytes())?;
                Ok(())
            });
        flatten(result)
    }

    /// Appends a version to a stack and makes it the latest, setting the
    /// stack's status to `status`. Versions already stored are never touched.
    pub fn add_version(
        &self,
        stack_id: &str,
        version_id: &str,
        created_ms: i64,
        body: &str,
        pools: &std::collections::BTreeMap<String, String>,
        status: StackStatus,
    ) -> StoreResult<VersionOutcome> {
        let result = (&self.stacks, &self.versions, &self.version_ids).transaction(
            |(stacks, versions, version_ids)| {
                let Some(bytes) = stacks.get(stack_id.as_bytes())? else {
                    return Ok(VersionOutcome::NoStack);
                };
                let mut stack: StackRecord = decode("stacks", stack_id.as_bytes(), &bytes)
                    .map_err(ConflictableTransactionError::Abort)?;
                if stack.stack_status.is_deleting() {
                    return Ok(VersionOutcome::Deleting(stack.stack_status));
                }
                let version = VersionRecord {
                    stack_id: stack_id.to_owned(),
                    seq: stack.latest_seq + 1,
                    version_id: version_id.to_owned(),
                    created_ms,
                    body: body.to_owned(),
                    pools: pools.clone(),
                };
                stack.latest_seq = version.seq;
                stack.latest_version_id = version.version_id.clone();
                stack.stack_status = status;
                stack.status_reason = None;
                stack.updated_ms = created_ms;
                versions.insert(
                    version_key(stack_id, version.seq),
                    tx_encode("versions", &version)?,
                )?;
                version_ids.insert(pair_key(stack_id, version_id), &version.seq.to_be_bytes())?;
                stacks.insert(stack_id.as_bytes(), tx_encode("stacks", &stack)?)?;
                Ok(VersionOutcome::Added(Box::new(stack)))
            },
        );
        flatten(result)
    }

    /// The stack with this id.
    pub fn stack(&self, stack_id: &str) -> StoreResult<Option<StackRecord>> {
        get(&self.stacks, "stacks", stack_id.as_bytes())
    }

    /// The id of the stack whose `auth_token` has this digest.
    pub fn stack_by_token(&self, token_digest: &str) -> StoreResult<Option<String>> {
        Ok(self
            .stack_tokens
            .get(token_digest.as_bytes())?
            .map(|id| String::from_utf8_lossy(&id).into_owned()))
    }

    /// Every stack, ordered by id.
    pub fn stacks(&self) -> StoreResult<Vec<StackRecord>> {
        scan(&self.stacks, "stacks", b"")
    }

    /// Sets a stack's status (and reason). `None` when the stack is gone.
    pub fn set_stack_status(
        &self,
        stack_id: &str,
        status: StackStatus,
        reason: Option<String>,
        now_ms: i64,
    ) -> StoreResult<Option<StackRecord>> {
        super::update(
            &self.stacks,
            "stacks",
            stack_id.as_bytes(),
            |stack: &mut StackRecord| {
                stack.stack_status = status;
                stack.status_reason = reason.clone();
                stack.updated_ms = now_ms;
            },
        )
    }

    /// Stops or starts a stack (its operator's hold): the flag, and the
    /// status back in progress until its containers say they are stopped
    /// (or running). A stack being deleted is left as it is. `None` when
    /// the stack is gone.
    pub fn set_stack_stopped(
        &self,
        stack_id: &str,
        stopped: bool,
        now_ms: i64,
    ) -> StoreResult<Option<StackRecord>> {
        super::update(
            &self.stacks,
            "stacks",
            stack_id.as_bytes(),
            |stack: &mut StackRecord| {
                if stack.stack_status.is_deleting() {
                    return;
                }
                stack.stopped = stopped;
                if stack.stack_status != StackStatus::CreateInProgress {
                    stack.stack_status = StackStatus::UpdateInProgress;
                }
                stack.status_reason = None;
                stack.updated_ms = now_ms;
            },
        )
    }

    /// Moves a stack from `from` to `to`, only if it is still in `from`
    /// at `version_id` (compare-and-swap): a derived status never
    /// overwrites a change an operator made meanwhile (a delete, a new
    /// version). Returns whether it moved.
    pub fn transition_stack_status(
        &self,
        stack_id: &str,
        version_id: &str,
        from: StackStatus,
        to: StackStatus,
        reason: Option<String>,
        now_ms: i64,
    ) -> StoreResult<bool> {
        loop {
            let Some(old) = self.stacks.get(stack_id.as_bytes())? else {
                return Ok(false);
            };
            let mut stack: StackRecord = decode("stacks", stack_id.as_bytes(), &old)?;
            if stack.stack_status != from || stack.latest_version_id != version_id {
                return Ok(false);
            }
            stack.stack_status = to;
            stack.status_reason = reason.clone();
            stack.updated_ms = now_ms;
            let new = encode("stacks", &stack)?;
            if self
                .stacks
                .compare_and_swap(stack_id.as_bytes(), Some(&old), Some(new))?
                .is_ok()
            {
                return Ok(true);
            }
        }
    }

    /// All versions of a stack, oldest first.
    pub fn versions(&self, stack_id: &str) -> StoreResult<Vec<VersionRecord>> {
        scan(&self.versions, "versions", &pair_prefix(stack_id))
    }

    /// One version of a stack by its version id.
    pub fn version(&self, stack_id: &str, version_id: &str) -> StoreResult<Option<VersionRecord>> {
        let Some(seq) = self.version_ids.get(pair_key(stack_id, version_id))? else {
            return Ok(None);
        };
        let seq = <[u8; 8]>::try_from(seq.as_ref()).map_err(|_| {
            StoreError::Conflict(format!(
                "version index entry for {stack_id} has a malformed sequence number"
            ))
        })?;
        self.version_by_seq(stack_id, u64::from_be_bytes(seq))
    }

    /// One version of a stack by its sequence number.
    pub fn version_by_seq(&self, stack_id: &str, seq: u64) -> StoreResult<Option<VersionRecord>> {
        get(&self.versions, "versions", &version_key(stack_id, seq))
    }

    /// Records the latest status an instance reported for a stack.
    pub fn put_instance_status(&self, record: &InstanceStatusRecord) -> StoreResult<()> {
        self.instances.insert(
            instance_key(
                &record.stack_id,
                &record.instance_id,
                record.flag.as_deref(),
            ),
            encode("instances", record)?,
        )?;
        Ok(())
    }

    /// The latest status of every instance of a stack, ordered by instance id.
    pub fn instance_statuses(&self, stack_id: &str) -> StoreResult<Vec<InstanceStatusRecord>> {
        scan(&self.instances, "instances", &pair_prefix(stack_id))
    }
}
