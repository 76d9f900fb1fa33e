//! What every handler shares.

use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Settings the API needs at request time.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub body_limit: usize,
    pub token_ttl: Duration,
}

/// Shared state of the REST API: the store, settings, and a nudge for the
/// reconciler when something it cares about changed.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub settings: Arc<ApiSettings>,
    pub reconcile: Arc<Notify>,
}

impl AppState {
    /// Asks the reconciler to look at stacks again (coalesced, never blocks).
    pub fn nudge(&self) {
        self.reconcile.notify_one();
    }
}
