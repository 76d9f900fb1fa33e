//! The stacks' `auth_token`s as the last scheduler pass read them, so a
//! fleet-wide push does not read and decode a stack record once per agent.
//! A stack's token never changes while the stack exists, so a pass's view
//! is never stale for a stack it placed; a stack it did not see (a session
//! that connects before the first pass) is read from the store.

use crate::store::Store;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Stack id → token, replaced whole by every pass (so deleted stacks
/// leave with the next pass and the map never outgrows the live stacks).
#[derive(Debug, Default)]
pub struct StackTokens {
    known: RwLock<Arc<HashMap<String, String>>>,
}

impl StackTokens {
    /// What the pass read: every live stack's token.
    pub fn replace(&self, tokens: HashMap<String, String>) {
        if let Ok(mut known) = self.known.write() {
            *known = Arc::new(tokens);
        }
    }

    /// The token of each stack in `stack_ids`, from the pass's view, else
    /// from the store (empty when the stack is gone or unreadable).
    pub fn of<'a>(
        &self,
        store: &Store,
        stack_ids: impl Iterator<Item = &'a str>,
    ) -> HashMap<String, String> {
        let known = self
            .known
            .read()
            .map(|known| known.clone())
            .unwrap_or_default();
        let mut tokens = HashMap::new();
        for stack_id in stack_ids {
            if tokens.contains_key(stack_id) {
                continue;
            }
            let token = match known.get(stack_id) {
                Some(token) => token.clone(),
                None => read(store, stack_id),
            };
            tokens.insert(stack_id.to_string(), token);
        }
        tokens
    }
}

/// A stack's token from the store.
fn read(store: &Store, stack_id: &str) -> String {
    match store.stack(stack_id) {
        Ok(stack) => stack.map(|s| s.auth_token).unwrap_or_default(),
        Err(err) => {
            tracing::warn!(error = %err, stack_id, "cannot read a stack's token");
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StackRecord, StackStatus, VersionRecord};

    fn stack(store: &Store, stack_id: &str, token: &str) {
        let record = StackRecord {
            stack_id: stack_id.into(),
            user_id: "u".into(),
            username: "alice".into(),
            nickname: stack_id.into(),
            auth_token: token.into(),
            create_time_ms: 0,
            stack_status: StackStatus::CreateInProgress,
            status_reason: None,
            vendor: None,
            latest_seq: 1,
            latest_version_id: "v1".into(),
            updated_ms: 0,
            stopped: false,
        };
        let version = VersionRecord {
            stack_id: stack_id.into(),
            seq: 1,
            version_id: "v1".into(),
            created_ms: 0,
            body: "{}".into(),
            pools: Default::default(),
        };
        store
            .create_stack(&record, &format!("digest-{stack_id}"), &version)
            .expect("create stack");
    }

    #[test]
    fn the_pass_view_first_then_the_store_then_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 8 << 20).expect("open");
        stack(&store, "stored", "from-store");
        let tokens = StackTokens::default();
        tokens.replace(HashMap::from([(
            "seen".to_string(),
            "from-pass".to_string(),
        )]));
        let cases = [
            ("seen", "from-pass"),
            ("stored", "from-store"),
            ("gone", ""),
        ];
        for (stack_id, want) in cases {
            let got = tokens.of(&store, [stack_id, stack_id].into_iter());
            assert_eq!(got.len(), 1, "{stack_id}");
            assert_eq!(
                got.get(stack_id).map(String::as_str),
                Some(want),
                "{stack_id}"
            );
        }
        // A new pass's view replaces the old one whole.
        tokens.replace(HashMap::new());
        let got = tokens.of(&store, ["seen"].into_iter());
        assert_eq!(got.get("seen").map(String::as_str), Some(""));
    }
}
