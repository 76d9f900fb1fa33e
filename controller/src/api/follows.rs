//! How many log follows each client has open per instance: a few at most,
//! so no caller ties up an agent's streams for others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open follows per (client, instance).
#[derive(Debug, Default)]
pub struct Follows {
    open: Mutex<HashMap<(String, String), usize>>,
}

/// One open follow; dropping it (the response body ends or its client
/// goes) gives the place back.
pub struct FollowGuard {
    follows: Arc<Follows>,
    key: (String, String),
}

impl Follows {
    /// Takes a place for `client` on `instance`, unless `max` are open.
    pub fn take(self: &Arc<Self>, client: &str, instance: &str, max: usize) -> Option<FollowGuard> {
        let key = (client.to_owned(), instance.to_owned());
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key.clone()).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(FollowGuard {
            follows: self.clone(),
            key,
        })
    }
}

impl Drop for FollowGuard {
    fn drop(&mut self) {
        let mut open = self.follows.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_per_client_and_instance_and_come_back() {
        let follows = Arc::new(Follows::default());
        let a1 = follows.take("c1", "i-1", 2).expect("first");
        let _a2 = follows.take("c1", "i-1", 2).expect("second");
        assert!(follows.take("c1", "i-1", 2).is_none(), "third refused");
        assert!(follows.take("c1", "i-2", 2).is_some(), "another instance");
        assert!(follows.take("c2", "i-1", 2).is_some(), "another client");
        drop(a1);
        assert!(follows.take("c1", "i-1", 2).is_some(), "a place came back");
    }
}
