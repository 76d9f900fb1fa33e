//! The REST API's limits on slow and greedy clients, as configured: how
//! long a request's headers and body may take, how many connections are
//! served at once, how many requests a caller may make, and how failed
//! secrets are slowed and locked out. The defaults are far above what a
//! `--wait` poller (1 request per second per stack) or the fleet tooling
//! sends.

use crate::auth::lockout::LockoutPolicy;
use std::time::Duration;

/// Requests per second a caller may make on average, and how many at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// Every HTTP limit of the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time for a request's headers to arrive; also how long a kept-alive
    /// connection may sit idle, and the TLS handshake's bound.
    pub header_timeout: Duration,
    /// Time for a request's whole body to arrive once its handler reads it.
    pub body_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Per authenticated caller (client, stack token, agent token).
    pub caller_rate: Rate,
    /// Per source address: token requests and calls without a valid token.
    pub address_rate: Rate,
    /// Failed secrets per (client id, source address).
    pub lockout: LockoutPolicy,
}

/// Default time for a request's headers (and idle keep-alive).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time for a request's body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default rate per caller and per address.
pub const DEFAULT_RATE: Rate = Rate {
    per_second: 20,
    burst: 200,
};

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            caller_rate: DEFAULT_RATE,
            address_rate: DEFAULT_RATE,
            lockout: LockoutPolicy::default(),
        }
    }
}
