//! What every handler shares.

use crate::fleet::Fleet;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// Settings the API needs at request time.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub body_limit: usize,
    pub token_ttl: Duration,
    /// Largest container section of one configuration (compact JSON), so
    /// no template can make a placement too large to push.
    pub max_container_section: usize,
    /// Webhooks may deliver to loopback and private addresses.
    pub webhook_allow_private: bool,
    /// What one user or credential may hold.
    pub quotas: crate::quotas::Quotas,
    /// How long a request's whole body may take.
    pub body_timeout: Duration,
    /// How long one instance of a rolling restart may take to be back.
    pub restart_timeout: Duration,
}

/// Shared state of the REST API: the store, settings, and the fleet (for
/// agents, join tokens and nudging the scheduler).
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub settings: Arc<ApiSettings>,
    pub fleet: Arc<Fleet>,
    /// Turns true when the server starts shutting down, so endless
    /// responses (the event stream) end and in-flight requests can finish.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Open log follows per client and instance (bounded).
    pub follows: Arc<super::follows::Follows>,
    /// Request buckets per caller and per address.
    pub rate_limits: Arc<super::rate_limit::RateLimits>,
    /// Failed secrets per (client id, address).
    pub lockouts: Arc<crate::auth::lockout::Lockouts>,
}

impl AppState {
    /// Records an operator's action in the audit trail (now) and answers
    /// the entry's event id; the handler flushes with its own writes
    /// before it answers.
    pub fn audit(
        &self,
        operator: &super::caller::Operator,
        record: crate::audit::Record<'_>,
    ) -> super::error::ApiResult<u64> {
        let event = crate::audit::append(
            &self.store,
            operator.actor(),
            record,
            crate::clock::now_ms(),
        )?;
        Ok(event.id)
    }

    /// Whether a user holding `used` of `quota` may create one more (409
    /// `quota_exceeded` naming it otherwise).
    pub fn admit(&self, quota: crate::quotas::Quota, used: usize) -> super::error::ApiResult<()> {
        Ok(crate::quotas::admit(quota, &self.settings.quotas, used)?)
    }

    /// The stack operations, over this state's store and limits.
    pub fn stacks(&self) -> crate::stacks::Stacks<'_> {
        crate::stacks::Stacks {
            store: &self.store,
            fleet: &self.fleet,
            max_container_section: self.settings.max_container_section,
            quotas: &self.settings.quotas,
        }
    }

    /// Asks the scheduler to look again (coalesced, never blocks).
    pub fn nudge(&self) {
        self.fleet.nudge();
    }
}
