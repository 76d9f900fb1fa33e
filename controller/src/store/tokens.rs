//! Access tokens, keyed by their SHA-256 digest so the database never holds a
//! usable token; and an index of each credential's tokens in issue order,
//! so a quota can let the oldest lapse without scanning every token.

use super::stacks::{flatten, tx_encode};
use super::{decode, get, Principal, Store, StoreResult, TokenRecord};
use sled::transaction::Transactional;

/// Key prefix of a credential's entries in the `token_owners` index: the
/// client or stack the token speaks for.
fn owner_prefix(principal: &Principal) -> Vec<u8> {
    let (kind, id) = match principal {
        Principal::Client { client_id, .. } => ("c", client_id),
        Principal::Stack { stack_id } => ("s", stack_id),
    };
    let mut key = Vec::with_capacity(id.len() + 3);
    key.extend_from_slice(kind.as_bytes());
    key.push(b':');
    key.extend_from_slice(id.as_bytes());
    key.push(0);
    key
}

/// `owner \0 issued_ms (big-endian) digest`: keys sort in issue order.
fn owner_key(token: &TokenRecord, digest: &str) -> Vec<u8> {
    let mut key = owner_prefix(&token.principal);
    key.extend_from_slice(&token.issued_ms.to_be_bytes());
    key.extend_from_slice(digest.as_bytes());
    key
}

/// The digest at the end of an index key.
fn digest_of(key: &[u8], prefix_len: usize) -> Option<&str> {
    key.get(prefix_len + 8..)
        .and_then(|rest| std::str::from_utf8(rest).ok())
}

impl Store {
    /// Stores a newly issued token under its digest, and in its
    /// credential's index, atomically.
    pub fn insert_token(&self, digest: &str, token: &TokenRecord) -> StoreResult<()> {
        let result = (&self.tokens, &self.token_owners).transaction(|(tokens, owners)| {
            tokens.insert(digest.as_bytes(), tx_encode("tokens", token)?)?;
            owners.insert(owner_key(token, digest), &[])?;
            Ok(())
        });
        flatten(result)
    }

    /// The token with this digest.
    pub fn token(&self, digest: &str) -> StoreResult<Option<TokenRecord>> {
        get(&self.tokens, "tokens", digest.as_bytes())
    }

    /// Marks a token revoked. Returns whether it existed.
    pub fn revoke_token(&self, digest: &str, now_ms: i64) -> StoreResult<bool> {
        let revoked = super::update(
            &self.tokens,
            "tokens",
            digest.as_bytes(),
            |token: &mut TokenRecord| {
                token.revoked_ms.get_or_insert(now_ms);
            },
        )?;
        Ok(revoked.is_some())
    }

    /// The digests of the tokens `principal`'s credential holds that still
    /// work at `now_ms`, oldest first. Index entries of tokens that no
    /// longer work are dropped on the way.
    pub fn active_tokens_of(&self, principal: &Principal, now_ms: i64) -> StoreResult<Vec<String>> {
        let prefix = owner_prefix(principal);
        let mut active = Vec::new();
        for entry in self.token_owners.scan_prefix(&prefix) {
            let (key, _) = entry?;
            let live = match digest_of(&key, prefix.len()) {
                Some(digest) => self
                    .token(digest)?
                    .filter(|t| t.revoked_ms.is_none() && t.expires_ms > now_ms)
                    .map(|_| digest.to_owned()),
                None => None,
            };
            match live {
                Some(digest) => active.push(digest),
                None => {
                    self.token_owners.remove(&key)?;
                }
            }
        }
        Ok(active)
    }

    /// Deletes tokens that expired before `now_ms`, and their index
    /// entries, so neither tree grows forever. Returns how many tokens were
    /// removed.
    pub fn purge_expired_tokens(&self, now_ms: i64) -> StoreResult<usize> {
        let mut removed = 0;
        for entry in self.tokens.iter() {
            let (key, value) = entry?;
            let token: TokenRecord = decode("tokens", &key, &value)?;
            if token.expires_ms < now_ms {
                self.tokens.remove(&key)?;
                if let Ok(digest) = std::str::from_utf8(&key) {
                    self.token_owners.remove(owner_key(&token, digest))?;
                }
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Indexes tokens issued before the index existed (a store from an
    /// older release), so they count against their credential's quota.
    /// Returns how many were indexed.
    pub fn index_unindexed_tokens(&self) -> StoreResult<usize> {
        if !self.token_owners.is_empty() || self.tokens.is_empty() {
            return Ok(0);
        }
        let mut indexed = 0;
        for entry in self.tokens.iter() {
            let (key, value) = entry?;
            let token: TokenRecord = decode("tokens", &key, &value)?;
            if let Ok(digest) = std::str::from_utf8(&key) {
                self.token_owners.insert(owner_key(&token, digest), &[])?;
                indexed += 1;
            }
        }
        Ok(indexed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(principal: Principal, issued_ms: i64) -> TokenRecord {
        TokenRecord {
            principal,
            issued_ms,
            expires_ms: issued_ms + 1_000,
            revoked_ms: None,
        }
    }

    #[test]
    fn each_credential_sees_only_its_own_tokens_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1 << 20).expect("store");
        let stack = Principal::Stack {
            stack_id: "s1".into(),
        };
        let other = Principal::Stack {
            stack_id: "s10".into(),
        };
        for (digest, issued) in [("b", 20), ("a", 10), ("c", 30)] {
            store
                .insert_token(digest, &token(stack.clone(), issued))
                .expect("store");
        }
        store
            .insert_token("z", &token(other.clone(), 5))
            .expect("store");
        let active = store.active_tokens_of(&stack, 15).expect("store");
        assert_eq!(active, ["a", "b", "c"]);
        store.revoke_token("b", 16).expect("store");
        // "a" expired at 1010; "b" is revoked.
        let active = store.active_tokens_of(&stack, 1_015).expect("store");
        assert_eq!(active, ["c"]);
        let theirs = store.active_tokens_of(&other, 15).expect("store");
        assert_eq!(theirs, ["z"]);
    }
}
