//! Connections that have not authenticated yet: counted from accept until
//! their hello or enrollment request is verified, with a guard that gives
//! the slot back on every exit path (success, refusal, timeout, panic).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// How many connections are between accept and authentication.
#[derive(Debug, Default)]
pub struct Unauthenticated {
    open: AtomicUsize,
}

impl Unauthenticated {
    /// Connections currently unauthenticated.
    pub fn count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts one more until the returned guard is dropped or the
    /// connection authenticates; it must be done by `deadline`.
    pub fn enter(self: &Arc<Self>, deadline: Instant) -> Pending {
        self.open.fetch_add(1, Ordering::Relaxed);
        Pending {
            slot: Slot(self.clone()),
            deadline,
        }
    }
}

/// Gives the slot back when dropped.
#[derive(Debug)]
struct Slot(Arc<Unauthenticated>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection not yet authenticated, and the time by which it must be.
#[derive(Debug)]
pub struct Pending {
    slot: Slot,
    deadline: Instant,
}

impl Pending {
    /// When the TLS handshake, the preamble and the hello (or enrollment
    /// request) must all be done.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The peer proved who it is: its slot is free for the next one.
    pub fn authenticated(self) {
        drop(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_exit_gives_the_slot_back() {
        let counter = Arc::new(Unauthenticated::default());
        let deadline = Instant::now();
        let first = counter.enter(deadline);
        let second = counter.enter(deadline);
        assert_eq!(counter.count(), 2);
        first.authenticated();
        assert_eq!(counter.count(), 1);
        drop(second);
        assert_eq!(counter.count(), 0);
        let third = counter.enter(deadline);
        let task = tokio::spawn(async move {
            let _held = third;
            panic!("a connection task that fails");
        });
        assert!(task.await.is_err());
        assert_eq!(counter.count(), 0);
    }
}
