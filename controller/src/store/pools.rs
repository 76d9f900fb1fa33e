//! Pools of agents, and the one-time upgrade that put every user of an
//! older controller into the built-in pool.

use super::{encode, get, scan, PoolRecord, Store, StoreResult, UserRecord, DEFAULT_POOL};

/// `meta` key: when this store first ran with pools (ms since the epoch,
/// u64 BE). Stacks created before it keep their volumes' old names.
const POOLS_SINCE: &[u8] = b"pools_since_ms";

impl Store {
    /// Every pool, oldest first (the order a user's default pool is
    /// chosen in).
    pub fn pools(&self) -> StoreResult<Vec<PoolRecord>> {
        let mut pools: Vec<PoolRecord> = scan(&self.pools, "pools", b"")?;
        pools.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then(a.name.cmp(&b.name)));
        Ok(pools)
    }

    /// One pool.
    pub fn pool(&self, name: &str) -> StoreResult<Option<PoolRecord>> {
        get(&self.pools, "pools", name.as_bytes())
    }

    /// Stores a new pool; `false` when one of that name exists.
    pub fn create_pool(&self, pool: &PoolRecord) -> StoreResult<bool> {
        Ok(self
            .pools
            .compare_and_swap(
                pool.name.as_bytes(),
                None as Option<&[u8]>,
                Some(encode("pools", pool)?),
            )?
            .is_ok())
    }

    /// Replaces `old` with `new`; `false` when the pool changed (or went)
    /// since `old` was read, so checks made against `old` still hold.
    pub fn replace_pool(&self, old: &PoolRecord, new: &PoolRecord) -> StoreResult<bool> {
        Ok(self
            .pools
            .compare_and_swap(
                old.name.as_bytes(),
                Some(encode("pools", old)?),
                Some(encode("pools", new)?),
            )?
            .is_ok())
    }

    /// Removes `old`; `false` when it changed since it was read.
    pub fn delete_pool(&self, old: &PoolRecord) -> StoreResult<bool> {
        Ok(self
            .pools
            .compare_and_swap(
                old.name.as_bytes(),
                Some(encode("pools", old)?),
                None as Option<Vec<u8>>,
            )?
            .is_ok())
    }

    /// Creates the built-in pool when missing. The first time a store runs
    /// with pools, every user it already has is put in it, so what ran
    /// before the upgrade keeps running; on a new store it starts empty
    /// (admins only).
    pub fn ensure_default_pool(&self, now_ms: i64) -> StoreResult<()> {
        let first = self.meta.get(POOLS_SINCE)?.is_none();
        if first || self.pool(DEFAULT_POOL)?.is_none() {
            let users: Vec<String> = if first {
                scan::<UserRecord>(&self.users, "users", b"")?
                    .into_iter()
                    .map(|u| u.username)
                    .collect()
            } else {
                Vec::new()
            };
            let added = users.len();
            self.create_pool(&PoolRecord {
                name: DEFAULT_POOL.to_owned(),
                users,
                policy: Default::default(),
                created_ms: 0,
                updated_ms: now_ms,
            })?;
            if first {
                tracing::info!(
                    users = added,
                    "pools enabled; existing users added to the default pool"
                );
            }
        }
        if first {
            self.meta.insert(POOLS_SINCE, &now_ms.to_be_bytes())?;
        }
        Ok(())
    }

    /// When this store first ran with pools.
    pub fn pools_since_ms(&self) -> StoreResult<i64> {
        Ok(self
            .meta
            .get(POOLS_SINCE)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, i64::from_be_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_start_with_pools_puts_every_existing_user_in_the_default_pool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 8 << 20).expect("open");
        // A store from before pools: users, no pool.
        store.ensure_user("alice", 1).expect("alice");
        store.ensure_user("bob", 2).expect("bob");
        assert!(store.pool(DEFAULT_POOL).expect("read").is_none());
        store.ensure_default_pool(10).expect("upgrade");
        let default = store.pool(DEFAULT_POOL).expect("read").expect("default");
        let mut users = default.users.clone();
        users.sort();
        assert_eq!(users, ["alice", "bob"]);
        assert_eq!(store.pools_since_ms().expect("since"), 10);
        // Later starts add nobody: users made afterwards are an admin's to place.
        store.ensure_user("carol", 20).expect("carol");
        store.ensure_default_pool(30).expect("again");
        assert_eq!(
            store
                .pool(DEFAULT_POOL)
                .expect("read")
                .expect("default")
                .users
                .len(),
            2
        );
        assert_eq!(store.pools_since_ms().expect("since"), 10);
    }

    #[test]
    fn a_new_store_starts_with_an_empty_default_pool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 8 << 20).expect("open");
        store.ensure_default_pool(5).expect("pools");
        let default = store.pool(DEFAULT_POOL).expect("read").expect("default");
        assert!(default.users.is_empty());
        assert!(default.policy == Default::default(), "default deny");
    }
}
