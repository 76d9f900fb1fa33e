//! Operator holds: the configurations of stacks an operator stopped on
//! this instance (`POST .../instances/{id}/stop`). A held container stays
//! stopped through agent restarts, `kill -9`, reconnects and the clean-up
//! until an operator starts or restarts it; a slot that ends (the stack
//! left this agent) forgets its hold. A stack-wide stop is not a hold
//! here: it comes with every desired state (`Placement::held`).

use super::{AgentStore, StateError};

/// A slot's key: the stack id, a NUL, the flag.
pub(super) fn key(stack_id: &str, flag: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stack_id.len() + flag.len() + 1);
    key.extend_from_slice(stack_id.as_bytes());
    key.push(0);
    key.extend_from_slice(flag.as_bytes());
    key
}

impl AgentStore {
    /// Holds `(stack_id, flag)` stopped, on disk before it returns.
    pub async fn hold(&self, stack_id: &str, flag: &str, now_ms: i64) -> Result<(), StateError> {
        self.holds
            .insert(key(stack_id, flag), now_ms.to_be_bytes().to_vec())?;
        self.flush().await
    }

    /// Releases a hold (an operator's start or restart, or the slot's
    /// end), on disk before it returns.
    pub async fn release_hold(&self, stack_id: &str, flag: &str) -> Result<(), StateError> {
        if self.holds.remove(key(stack_id, flag))?.is_some() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Whether `(stack_id, flag)` is held stopped. A store that cannot be
    /// read counts as held: a container stays stopped rather than start
    /// against an operator's word.
    pub fn held(&self, stack_id: &str, flag: &str) -> bool {
        self.holds.contains_key(key(stack_id, flag)).unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_survive_a_reopen_and_are_per_configuration() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = AgentStore::open(dir.path()).expect("open");
            store.hold("st-a", "Web01", 1).await.expect("hold");
            store.hold("st-a", "Job01", 1).await.expect("hold");
            store.release_hold("st-a", "Job01").await.expect("release");
            store
                .release_hold("st-b", "Web01")
                .await
                .expect("nothing to release");
        }
        let store = AgentStore::open(dir.path()).expect("reopen");
        for (stack, flag, held) in [
            ("st-a", "Web01", true),
            ("st-a", "Job01", false),
            ("st-b", "Web01", false),
            ("st-a\0Web", "01", false),
        ] {
            assert_eq!(store.held(stack, flag), held, "{stack} {flag}");
        }
    }
}
