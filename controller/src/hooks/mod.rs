//! Webhooks: every event is fanned out to the subscriptions that want it,
//! as a delivery in that hook's stored queue, then POSTed to the
//! subscriber, signed, and retried with exponential backoff until it is
//! taken or the attempts run out. Both steps survive restarts: the fan-out
//! cursor and the queues are stored.
//!
//! A delivery is `POST <url>` with the event record as JSON (as `GET
//! /v3/events` shows it) and the headers `X-Flotilla-Event` (type),
//! `X-Flotilla-Delivery` (id, the same across retries) and
//! `X-Flotilla-Signature-256: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>" with the hook's secret>`. Any 2xx answer counts as
//! delivered; redirects are not followed.
//!
//! Slow receivers are contained: each hook has at most one attempt
//! running, and its later deliveries wait behind it (event order); every
//! attempt ends after a short timeout; attempts are bounded in all and
//! per user, so one user's receivers never take every slot; a hook's
//! queue is bounded and deliveries past it fail at once (`queue full`).

mod attempt;
pub mod decide;
mod dispatch;
mod fanout;
pub mod signature;

pub use dispatch::run;

use std::time::Duration;

/// How long one attempt (DNS, connecting, the answer) may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts running at once, in all.
pub const MAX_IN_FLIGHT: usize = 64;
/// Attempts running at once for one user's hooks.
pub const MAX_IN_FLIGHT_PER_USER: usize = 16;
/// Deliveries waiting in one hook's queue.
pub const MAX_QUEUED: usize = 1000;

/// The dispatcher's settings.
#[derive(Debug, Clone)]
pub struct HookSettings {
    /// The longest one attempt may take.
    pub timeout: Duration,
    /// Deliveries may go to loopback and private addresses.
    pub allow_private: bool,
    /// Attempts running at once.
    pub limits: decide::Limits,
    /// Deliveries waiting per hook; past it new ones fail (`queue full`).
    pub max_queued: usize,
}

impl HookSettings {
    /// The default bounds with the operator's timeout and target rule.
    pub fn new(timeout: Duration, allow_private: bool) -> Self {
        HookSettings {
            timeout,
            allow_private,
            limits: decide::Limits {
                in_flight: MAX_IN_FLIGHT,
                per_owner: MAX_IN_FLIGHT_PER_USER,
            },
            max_queued: MAX_QUEUED,
        }
    }
}
