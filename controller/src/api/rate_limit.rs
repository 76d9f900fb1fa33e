//! Request rate limits, with the ObjectRocket reference's headers on every
//! answer (errors included): `X-RateLimit-Limit` (the burst a caller may
//! send at once), `X-RateLimit-Remaining` (what is left of it) and
//! `X-RateLimit-Reset` (the Unix time, in seconds, when it is whole again,
//! as the reference's epoch value). Past the limit: 429 `rate_limited` in
//! the error shape with `Retry-After`.
//!
//! Authenticated calls count against their caller (an API client, a stack
//! token, an agent's REST token), so one client's flood never slows
//! another; token requests and calls without a valid token count against
//! their source address (IPv6 by /64, the block one host usually holds).
//! The buckets are governor's GCRA in a concurrent map; [`sweep`] drops
//! the ones that have filled up again, so memory follows recent callers.

use super::error::ApiError;
use super::limits::Rate;
use super::state::AppState;
use crate::auth::{agent_tokens, tokens};
use crate::store::{Principal, Store};
use axum::extract::{Request, State};
use axum::http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use serde_json::json;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `X-RateLimit-Limit`.
pub const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`.
pub const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`.
pub const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// What a request is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// An authenticated caller: `client:<id>`, `stack:<id>` or `agent:<id>`.
    Caller(String),
    /// A source address (IPv6 masked to /64).
    Address(IpAddr),
}

impl Subject {
    /// The metric label of this kind of subject.
    pub fn scope(&self) -> &'static str {
        match self {
            Subject::Caller(_) => "caller",
            Subject::Address(_) => "address",
        }
    }
}

/// The address a request is counted against: IPv4 as is (also when
/// written IPv4-mapped), IPv6 by its /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

/// The subject of a request: its caller when it presented a valid
/// credential (except for token requests, always by address), else its
/// address.
pub fn subject(token_request: bool, caller: Option<String>, addr: IpAddr) -> Subject {
    match caller {
        Some(caller) if !token_request => Subject::Caller(caller),
        _ => Subject::Address(address_key(addr)),
    }
}

/// Where a subject stands after a request was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The burst the subject may send at once.
    pub limit: u32,
    /// What is left of it.
    pub remaining: u32,
    /// Until the burst is whole again.
    pub reset_after: Duration,
    /// Set when the request is refused: until the next one may pass.
    pub retry_after: Option<Duration>,
}

fn ceil_secs(duration: Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

/// The headers of `standing`, with `now` the time since the Unix epoch
/// (a refusal's `Retry-After` comes with its error, [`refused`]).
pub fn headers(standing: &Standing, now: Duration) -> [(HeaderName, HeaderValue); 3] {
    [
        (LIMIT, HeaderValue::from(standing.limit)),
        (REMAINING, HeaderValue::from(standing.remaining)),
        (
            RESET,
            HeaderValue::from(ceil_secs(now.saturating_add(standing.reset_after))),
        ),
    ]
}

type Keyed<K> = RateLimiter<K, DashMapStateStore<K>, DefaultClock, StateInformationMiddleware>;

fn keyed<K: std::hash::Hash + Eq + Clone>(rate: Rate) -> Keyed<K> {
    let per_second = NonZeroU32::new(rate.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::dashmap(Quota::per_second(per_second).allow_burst(burst))
        .with_middleware::<StateInformationMiddleware>()
}

/// The buckets of callers and of addresses.
pub struct RateLimits {
    callers: Keyed<String>,
    addresses: Keyed<IpAddr>,
}

impl RateLimits {
    pub fn new(caller_rate: Rate, address_rate: Rate) -> Self {
        RateLimits {
            callers: keyed(caller_rate),
            addresses: keyed(address_rate),
        }
    }

    /// Counts one request of `subject`.
    pub fn check(&self, subject: &Subject) -> Standing {
        match subject {
            Subject::Caller(caller) => standing(&self.callers, caller),
            Subject::Address(addr) => standing(&self.addresses, addr),
        }
    }

    /// Drops the buckets that are whole again (they hold nothing a new
    /// one would not) and gives their memory back.
    pub fn sweep(&self) {
        self.callers.retain_recent();
        self.callers.shrink_to_fit();
        self.addresses.retain_recent();
        self.addresses.shrink_to_fit();
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.callers.len() + self.addresses.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn standing<K: std::hash::Hash + Eq + Clone>(limiter: &Keyed<K>, key: &K) -> Standing {
    match limiter.check_key(key) {
        Ok(snapshot) => {
            let quota = snapshot.quota();
            let limit = quota.burst_size().get();
            let remaining = snapshot.remaining_burst_capacity();
            Standing {
                limit,
                remaining,
                reset_after: quota.replenish_interval() * limit.saturating_sub(remaining),
                retry_after: None,
            }
        }
        Err(refused) => {
            let quota = refused.quota();
            let limit = quota.burst_size().get();
            let wait = refused.wait_time_from(limiter.clock().now());
            Standing {
                limit,
                remaining: 0,
                reset_after: wait + quota.replenish_interval() * limit.saturating_sub(1),
                retry_after: Some(wait),
            }
        }
    }
}

/// The caller a request's credential names, if it is valid now.
fn caller(store: &Store, headers: &HeaderMap) -> Option<String> {
    let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let token = tokens::bearer(header).ok()?;
    match tokens::authenticate_agent(store, token) {
        Ok(Principal::Client { client_id, .. }) => Some(format!("client:{client_id}")),
        Ok(Principal::Stack { stack_id }) => Some(format!("stack:{stack_id}")),
        Err(_) => agent_tokens::authenticate(store, token)
            .ok()
            .flatten()
            .map(|agent| format!("agent:{}", agent.agent_id)),
    }
}

/// The 429 past the limit, with `Retry-After` (whole seconds, at least 1).
fn refused(standing: &Standing) -> ApiError {
    let retry = standing.retry_after.map_or(1, |d| ceil_secs(d).max(1));
    ApiError::too_many(
        "rate_limited",
        format!("too many requests; retry after {retry} s"),
        retry,
    )
    .context(json!({ "limit": standing.limit, "retry_after": retry }))
}

/// The middleware: counts the request, refuses it past the limit, and
/// puts the headers on the answer.
pub async fn enforce(
    State(state): State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let addr = super::extract::peer(request.extensions()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let token_request =
        request.method() == Method::POST && request.uri().path() == "/v3/access_token";
    let caller = if token_request {
        None
    } else {
        caller(&state.store, request.headers())
    };
    let subject = subject(token_request, caller, addr);
    let standing = state.rate_limits.check(&subject);
    let mut response = if standing.retry_after.is_some() {
        state
            .fleet
            .metrics
            .rate_limited
            .get_or_create(&crate::metrics::ScopeLabels {
                scope: subject.scope().into(),
            })
            .inc();
        tracing::debug!(scope = subject.scope(), %addr, "request rate limited");
        refused(&standing).into_response()
    } else {
        next.run(request).await
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    for (name, value) in headers(&standing, now) {
        response.headers_mut().insert(name, value);
    }
    response
}

/// Every minute: drops whole buckets and pairs quiet for longer than a
/// lockout lasts.
pub async fn sweep(limits: Arc<RateLimits>, lockouts: Arc<crate::auth::lockout::Lockouts>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        limits.sweep();
        lockouts.sweep(crate::clock::now_ms());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_keyed_by_host() {
        for (ip, key) in [
            ("192.0.2.7", "192.0.2.7"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"),
            ("2001:db8:1:2::ffff", "2001:db8:1:2::"),
            ("::1", "::"),
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(address_key(ip).to_string(), key, "{ip}");
        }
    }

    #[test]
    fn subjects_by_credential_and_route() {
        let addr: IpAddr = "192.0.2.7".parse().expect("ip");
        let by_addr = Subject::Address(addr);
        let client = || Some("client:c1".to_owned());
        for (token_request, caller, expected) in [
            (false, client(), Subject::Caller("client:c1".into())),
            (false, None, by_addr.clone()),
            (true, client(), by_addr.clone()),
            (true, None, by_addr.clone()),
        ] {
            assert_eq!(subject(token_request, caller.clone(), addr), expected);
        }
    }

    #[test]
    fn headers_follow_the_reference() {
        let now = Duration::from_millis(1_437_773_195_400);
        let ok = Standing {
            limit: 100,
            remaining: 99,
            reset_after: Duration::from_millis(50),
            retry_after: None,
        };
        let limited = Standing {
            remaining: 0,
            reset_after: Duration::from_millis(5_000),
            retry_after: Some(Duration::from_millis(50)),
            ..ok
        };
        type Case = (Standing, Vec<(&'static str, &'static str)>);
        let cases: Vec<Case> = vec![
            (
                ok,
                vec![
                    ("x-ratelimit-limit", "100"),
                    ("x-ratelimit-remaining", "99"),
                    ("x-ratelimit-reset", "1437773196"),
                ],
            ),
            (
                limited,
                vec![
                    ("x-ratelimit-limit", "100"),
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1437773201"),
                ],
            ),
        ];
        for (standing, expected) in cases {
            let got: Vec<(String, String)> = headers(&standing, now)
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
                .collect();
            let expected: Vec<(String, String)> = expected
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            assert_eq!(got, expected, "{standing:?}");
        }
    }

    #[test]
    fn a_burst_then_refusal_per_subject() {
        let limits = RateLimits::new(
            Rate {
                per_second: 1,
                burst: 3,
            },
            Rate {
                per_second: 1,
                burst: 1,
            },
        );
        let a = Subject::Caller("client:a".into());
        let b = Subject::Caller("client:b".into());
        let remaining: Vec<u32> = (0..3).map(|_| limits.check(&a).remaining).collect();
        assert_eq!(remaining, vec![2, 1, 0]);
        let refused = limits.check(&a);
        assert_eq!(refused.remaining, 0);
        let wait = refused.retry_after.expect("refused");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(refused.reset_after >= wait, "{refused:?}");
        let error = super::refused(&refused).into_response();
        assert_eq!(error.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error.headers()["retry-after"], "1");
        assert_eq!(limits.check(&b).remaining, 2, "another caller is untouched");
        let addr = Subject::Address("192.0.2.7".parse().expect("ip"));
        assert_eq!(
            limits.check(&addr).limit,
            1,
            "addresses have their own rate"
        );
        assert!(limits.check(&addr).retry_after.is_some());
        assert_eq!(limits.len(), 3);
    }
}
