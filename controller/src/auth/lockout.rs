//! Failed secrets at `POST /v3/access_token`, counted per (client id,
//! source address) pair: after a few the pair must wait longer and longer
//! between tries, then it is locked out for a while.
//!
//! The pair, not the client id alone, is the key, so nobody can lock an
//! admin out from another address by guessing its secret. Every attempt
//! is counted before its secret is checked (a success forgets the pair),
//! so concurrent guesses cannot all slip through before the first failure
//! lands. Memory is bounded: at most [`MAX_PAIRS`] pairs, the least
//! recently tried dropped first.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

/// Pairs remembered at most. At the default per-address rate limit, one
/// address needs far longer than a lockout lasts to push its own pair out.
pub const MAX_PAIRS: usize = 65_536;

/// How failed secrets are slowed and locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures a pair may have before each further try must wait.
    pub slow_after: u32,
    /// The first wait; each further failure doubles it.
    pub first_delay: Duration,
    /// Failures that lock the pair out.
    pub lock_after: u32,
    /// How long a lock lasts; also how long a quiet pair's failures are
    /// remembered.
    pub lock_for: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            slow_after: 3,
            first_delay: Duration::from_secs(1),
            lock_after: 10,
            lock_for: Duration::from_secs(900),
        }
    }
}

/// What is remembered of one pair: attempts since it last succeeded (or
/// was forgotten), and when the latest was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempts {
    pub count: u32,
    pub last_ms: i64,
}

/// Why a try is refused without looking at its secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// When the pair may try again (ms since the epoch).
    pub until_ms: i64,
    /// Locked out, rather than only slowed.
    pub locked: bool,
}

impl Refusal {
    /// Whole seconds until the pair may try again (at least 1), for
    /// `Retry-After`.
    pub fn retry_after_secs(&self, now_ms: i64) -> u64 {
        let ms = u64::try_from(self.until_ms.saturating_sub(now_ms)).unwrap_or(0);
        ms.div_ceil(1000).max(1)
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The decision for a try at `now_ms` by a pair with `prev`: the pair's
/// new state (the try counted) if its secret may be checked, or why not.
pub fn attempt(prev: Attempts, now_ms: i64, policy: &LockoutPolicy) -> Result<Attempts, Refusal> {
    let quiet = now_ms.saturating_sub(prev.last_ms);
    let lock_for = millis(policy.lock_for);
    if prev.count == 0 || quiet >= lock_for {
        return Ok(Attempts {
            count: 1,
            last_ms: now_ms,
        });
    }
    if prev.count >= policy.lock_after {
        return Err(Refusal {
            until_ms: prev.last_ms.saturating_add(lock_for),
            locked: true,
        });
    }
    if prev.count >= policy.slow_after {
        let doublings = (prev.count - policy.slow_after).min(30);
        let delay = millis(policy.first_delay)
            .saturating_mul(1 << doublings)
            .min(lock_for);
        if quiet < delay {
            return Err(Refusal {
                until_ms: prev.last_ms.saturating_add(delay),
                locked: false,
            });
        }
    }
    Ok(Attempts {
        count: prev.count + 1,
        last_ms: now_ms,
    })
}

/// One pair: the digest of the client id (ids are caller-supplied and
/// unbounded) and the exact source address.
type Pair = (String, IpAddr);

/// The pairs' states, bounded.
pub struct Lockouts {
    policy: LockoutPolicy,
    pairs: Mutex<lru::LruCache<Pair, Attempts>>,
}

/// A try whose secret may be checked; say how it went with
/// [`Lockouts::succeeded`] or [`Tried::locks`].
#[derive(Debug)]
pub struct Tried {
    pair: Pair,
    count: u32,
}

impl Lockouts {
    pub fn new(policy: LockoutPolicy) -> Self {
        let cap = NonZeroUsize::new(MAX_PAIRS).unwrap_or(NonZeroUsize::MIN);
        Lockouts {
            policy,
            pairs: Mutex::new(lru::LruCache::new(cap)),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &LockoutPolicy {
        &self.policy
    }

    fn pairs(&self) -> std::sync::MutexGuard<'_, lru::LruCache<Pair, Attempts>> {
        self.pairs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a try by `client_id` from `addr` at `now_ms`, unless the
    /// pair must wait.
    pub fn begin(&self, client_id: &str, addr: IpAddr, now_ms: i64) -> Result<Tried, Refusal> {
        let pair = (super::secret::digest(client_id), addr);
        let mut pairs = self.pairs();
        let prev = pairs.get(&pair).copied().unwrap_or_default();
        let next = attempt(prev, now_ms, &self.policy)?;
        pairs.put(pair.clone(), next);
        Ok(Tried {
            pair,
            count: next.count,
        })
    }

    /// The secret was right: the pair's failures are forgotten.
    pub fn succeeded(&self, tried: Tried) {
        self.pairs().pop(&tried.pair);
    }

    /// Pairs remembered now.
    pub fn len(&self) -> usize {
        self.pairs().len()
    }

    /// Whether no pair is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets pairs quiet for longer than a lock lasts (their state is
    /// that of a new pair), so memory follows recent traffic.
    pub fn sweep(&self, now_ms: i64) {
        let lock_for = millis(self.policy.lock_for);
        let mut pairs = self.pairs();
        let stale: Vec<Pair> = pairs
            .iter()
            .filter(|(_, a)| now_ms.saturating_sub(a.last_ms) >= lock_for)
            .map(|(pair, _)| pair.clone())
            .collect();
        for pair in stale {
            pairs.pop(&pair);
        }
    }
}

impl Tried {
    /// Whether this try, having failed, locks its pair out.
    pub fn locks(&self, policy: &LockoutPolicy) -> bool {
        self.count == policy.lock_after
    }

    /// Failed tries of the pair so far, this one included.
    pub fn count(&self) -> u32 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: LockoutPolicy = LockoutPolicy {
        slow_after: 3,
        first_delay: Duration::from_secs(1),
        lock_after: 6,
        lock_for: Duration::from_secs(60),
    };

    fn at(count: u32, last_ms: i64) -> Attempts {
        Attempts { count, last_ms }
    }

    #[test]
    fn tries_are_checked_slowed_then_locked() {
        type Case = (&'static str, Attempts, i64, Result<Attempts, Refusal>);
        let slowed = |until_ms| {
            Err(Refusal {
                until_ms,
                locked: false,
            })
        };
        let cases: Vec<Case> = vec![
            ("first try", at(0, 0), 5_000, Ok(at(1, 5_000))),
            ("second, at once", at(1, 5_000), 5_001, Ok(at(2, 5_001))),
            ("third, at once", at(2, 5_000), 5_000, Ok(at(3, 5_000))),
            (
                "after 3 failures: wait 1 s",
                at(3, 5_000),
                5_999,
                slowed(6_000),
            ),
            (
                "after 3 failures, 1 s later",
                at(3, 5_000),
                6_000,
                Ok(at(4, 6_000)),
            ),
            ("after 4: wait 2 s", at(4, 5_000), 6_500, slowed(7_000)),
            ("after 5: wait 4 s", at(5, 5_000), 8_999, slowed(9_000)),
            ("after 5, 4 s later", at(5, 5_000), 9_000, Ok(at(6, 9_000))),
            (
                "after 6: locked for 60 s",
                at(6, 5_000),
                64_999,
                Err(Refusal {
                    until_ms: 65_000,
                    locked: true,
                }),
            ),
            (
                "a lock ends, the count starts over",
                at(6, 5_000),
                65_000,
                Ok(at(1, 65_000)),
            ),
            (
                "quiet pairs are forgotten",
                at(4, 5_000),
                70_000,
                Ok(at(1, 70_000)),
            ),
            (
                "a clock going back is no wait",
                at(2, 9_000),
                5_000,
                Ok(at(3, 5_000)),
            ),
        ];
        for (name, prev, now, expected) in cases {
            assert_eq!(attempt(prev, now, &POLICY), expected, "{name}");
        }
    }

    #[test]
    fn delays_never_pass_the_lock() {
        let policy = LockoutPolicy {
            slow_after: 1,
            lock_after: 100,
            ..POLICY
        };
        let refused = attempt(at(99, 0), 1, &policy).expect_err("slowed");
        assert_eq!(refused.until_ms, 60_000);
        assert_eq!(refused.retry_after_secs(1), 60);
        assert_eq!(refused.retry_after_secs(59_999), 1);
        assert_eq!(refused.retry_after_secs(70_000), 1);
    }

    #[test]
    fn pairs_are_separate_and_a_success_forgets() {
        let lockouts = Lockouts::new(LockoutPolicy {
            slow_after: 10,
            lock_after: 2,
            ..POLICY
        });
        let here: IpAddr = "127.0.0.1".parse().expect("ip");
        let there: IpAddr = "127.0.0.2".parse().expect("ip");
        let first = lockouts.begin("admin", here, 0).expect("first");
        assert!(!first.locks(lockouts.policy()));
        let second = lockouts.begin("admin", here, 1).expect("second");
        assert!(second.locks(lockouts.policy()));
        let refused = lockouts.begin("admin", here, 2).expect_err("locked");
        assert!(refused.locked);
        let elsewhere = lockouts.begin("admin", there, 2).expect("other address");
        lockouts.succeeded(elsewhere);
        assert!(lockouts.begin("other", here, 2).is_ok(), "other client id");
        assert_eq!(lockouts.len(), 2);
        lockouts.sweep(60_002);
        assert!(lockouts.is_empty(), "quiet pairs swept");
    }
}
