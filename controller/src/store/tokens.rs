//! Access tokens, keyed by their SHA-256 digest so the database never holds a
//! usable token.

use super::{decode, encode, get, Store, StoreResult, TokenRecord};

impl Store {
    /// Stores a newly issued token under its digest.
    pub fn insert_token(&self, digest: &str, token: &TokenRecord) -> StoreResult<()> {
        self.tokens
            .insert(digest.as_bytes(), encode("tokens", token)?)?;
        Ok(())
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

    /// Deletes tokens that expired before `now_ms`, so the tree does not grow
    /// forever. Returns how many were removed.
    pub fn purge_expired_tokens(&self, now_ms: i64) -> StoreResult<usize> {
        let mut removed = 0;
        for entry in self.tokens.iter() {
            let (key, value) = entry?;
            let token: TokenRecord = decode("tokens", &key, &value)?;
            if token.expires_ms < now_ms {
                self.tokens.remove(&key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
