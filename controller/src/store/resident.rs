//! State loaded from the trees on first use and kept in memory under one
//! lock, so readers never decode and writers, holding the lock from their
//! read to their tree write, never leave memory and the tree disagreeing.
//! Agent records and desired states live here (`agents.rs`, `desired.rs`).

use super::StoreResult;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// `T`, once loaded; cheap to clone (every clone shares it).
pub(super) struct Resident<T>(Arc<Mutex<Option<T>>>);

impl<T> Default for Resident<T> {
    fn default() -> Self {
        Resident(Arc::new(Mutex::new(None)))
    }
}

impl<T> Clone for Resident<T> {
    fn clone(&self) -> Self {
        Resident(self.0.clone())
    }
}

impl<T> Resident<T> {
    /// A panic while the lock was held leaves at worst a change in memory
    /// that the tree lacks (as a crash before the write would), so a
    /// poisoned lock is taken as it is.
    fn lock(&self) -> MutexGuard<'_, Option<T>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state, loading it with `load` first on first use
    /// (a failed load is tried again by the next caller).
    pub(super) fn with<R>(
        &self,
        load: impl FnOnce() -> StoreResult<T>,
        f: impl FnOnce(&mut T) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let mut guard = self.lock();
        let state = match guard.take() {
            Some(state) => state,
            None => load()?,
        };
        f(guard.insert(state))
    }

    /// Runs `f` on the state if it is loaded (nothing to do otherwise).
    pub(super) fn if_loaded<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.lock().as_mut().map(f)
    }
}
