//! Who may report over HTTP: each agent's own REST token (kept as a digest,
//! bound to the agent, replaced on every session) and the instance ids the
//! original alm-agent reported for each stack (bounded by the stack's
//! instance count, so a stack token cannot fill the store with made-up ids).

use super::{decode, encode, Store, StoreError, StoreResult};
use sled::transaction::TransactionError;

/// Why an alm-agent id was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum AlmIdOutcome {
    /// Known already, or added now.
    Taken,
    /// The stack already has `limit` distinct ids.
    Full { limit: usize },
}

fn digest_key(digest: &str) -> Vec<u8> {
    [b"d:".as_slice(), digest.as_bytes()].concat()
}

fn agent_key(agent_id: &str) -> Vec<u8> {
    [b"a:".as_slice(), agent_id.as_bytes()].concat()
}

impl Store {
    /// Makes `digest` the agent's only REST token: the previous one (if
    /// any) stops working in the same transaction.
    pub fn rotate_agent_token(&self, agent_id: &str, digest: &str) -> StoreResult<()> {
        let result: Result<(), TransactionError<StoreError>> =
            self.agent_tokens.transaction(|tree| {
                if let Some(old) = tree.get(agent_key(agent_id))? {
                    tree.remove([b"d:".as_slice(), old.as_ref()].concat())?;
                }
                tree.insert(agent_key(agent_id), digest.as_bytes())?;
                tree.insert(digest_key(digest), agent_id.as_bytes())?;
                Ok(())
            });
        result.map_err(|err| match err {
            TransactionError::Abort(err) => err,
            TransactionError::Storage(err) => StoreError::Sled(err),
        })
    }

    /// The agent a REST token digest belongs to, if it is that agent's
    /// current one.
    pub fn agent_by_token(&self, digest: &str) -> StoreResult<Option<String>> {
        Ok(self
            .agent_tokens
            .get(digest_key(digest))?
            .map(|id| String::from_utf8_lossy(&id).into_owned()))
    }

    /// Forgets the alm-agent ids of a stack that is gone (every key under
    /// `stack_id \0`).
    pub fn forget_alm_ids(&self, stack_id: &str) -> StoreResult<usize> {
        let keys: Vec<sled::IVec> = self
            .alm_ids
            .scan_prefix(super::pair_prefix(stack_id))
            .keys()
            .collect::<Result<_, _>>()?;
        for key in &keys {
            self.alm_ids.remove(key)?;
        }
        Ok(keys.len())
    }

    /// Records that the alm-agent reported `id` for `stack_id`, unless the
    /// stack already has `limit` other ids (checked and added atomically).
    pub fn take_alm_id(&self, stack_id: &str, id: &str, limit: usize) -> StoreResult<AlmIdOutcome> {
        loop {
            let old = self.alm_ids.get(stack_id.as_bytes())?;
            let mut ids: std::collections::BTreeSet<String> = match &old {
                Some(bytes) => decode("alm_ids", stack_id.as_bytes(), bytes)?,
                None => Default::default(),
            };
            if ids.contains(id) {
                return Ok(AlmIdOutcome::Taken);
            }
            if ids.len() >= limit {
                return Ok(AlmIdOutcome::Full { limit });
            }
            ids.insert(id.to_owned());
            let new = encode("alm_ids", &ids)?;
            if self
                .alm_ids
                .compare_and_swap(stack_id.as_bytes(), old, Some(new))?
                .is_ok()
            {
                return Ok(AlmIdOutcome::Taken);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_stacks_alm_ids_are_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1 << 20).expect("store");
        store.take_alm_id("s1\0", "i-1", 1).expect("take");
        store.take_alm_id("s1\0Web01", "i-2", 1).expect("take");
        store.take_alm_id("s10\0", "i-3", 1).expect("take");
        assert_eq!(store.forget_alm_ids("s1").expect("forget"), 2);
        assert_eq!(
            store.take_alm_id("s1\0", "i-9", 1).expect("take"),
            AlmIdOutcome::Taken
        );
        assert_eq!(
            store.take_alm_id("s10\0", "i-9", 1).expect("take"),
            AlmIdOutcome::Full { limit: 1 },
            "another stack's ids stay"
        );
    }

    #[test]
    fn a_rotated_token_replaces_the_old_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1 << 20).expect("store");
        store.rotate_agent_token("ag-1", "one").expect("rotate");
        assert_eq!(
            store.agent_by_token("one").expect("read").as_deref(),
            Some("ag-1")
        );
        store.rotate_agent_token("ag-1", "two").expect("rotate");
        assert_eq!(store.agent_by_token("one").expect("read"), None);
        assert_eq!(
            store.agent_by_token("two").expect("read").as_deref(),
            Some("ag-1")
        );
    }

    #[test]
    fn alm_ids_stop_at_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1 << 20).expect("store");
        let table = [
            ("i-1", AlmIdOutcome::Taken),
            ("i-1", AlmIdOutcome::Taken),
            ("i-2", AlmIdOutcome::Taken),
            ("i-3", AlmIdOutcome::Full { limit: 2 }),
            ("i-2", AlmIdOutcome::Taken),
        ];
        for (id, want) in table {
            assert_eq!(store.take_alm_id("st", id, 2).expect("take"), want, "{id}");
        }
        assert_eq!(
            store.take_alm_id("other", "i-3", 2).expect("take"),
            AlmIdOutcome::Taken
        );
    }
}
