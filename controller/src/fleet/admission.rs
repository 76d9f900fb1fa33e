//! Admission of new fleet connections, decided before any handshake work:
//! connections that have not authenticated yet are capped, and near the
//! cap only addresses that proved they receive our packets (QUIC Retry)
//! get in, so a flood of spoofed or stalled handshakes cannot take the
//! controller's memory or lock real agents out.

/// Limits on connections that have not authenticated yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// At most this many connections between accept and a verified hello
    /// or enrollment request; past it new ones are refused.
    pub max_unauthenticated: usize,
    /// Above this percentage of the cap an address must be validated
    /// (QUIC Retry) first; 0: always, 100 (or more): never.
    pub retry_above_percent: u8,
}

impl Limits {
    /// The limits for a cap and the percentage of it above which Retry is
    /// asked.
    pub fn new(max_unauthenticated: usize, retry_above_percent: u8) -> Limits {
        Limits {
            max_unauthenticated,
            retry_above_percent,
        }
    }

    /// From this many unauthenticated connections on, Retry is asked.
    pub fn retry_from(&self) -> usize {
        let percent = usize::from(self.retry_above_percent.min(100));
        self.max_unauthenticated.saturating_mul(percent) / 100
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(1024, 50)
    }
}

/// What to do with a new connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start the handshake.
    Admit,
    /// Answer with a Retry packet: the client comes back with a token
    /// proving its address, at the cost of one round trip.
    Retry,
    /// Refuse outright (CONNECTION_REFUSED); the client tries again later.
    Refuse,
}

impl Decision {
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Decision::Admit => "admitted",
            Decision::Retry => "retried",
            Decision::Refuse => "refused",
        }
    }
}

/// The decision for an attempt while `unauthenticated` connections are
/// open; `validated` says the attempt carries a valid Retry token (its
/// address is proven, and a second Retry is not allowed).
pub fn decide(unauthenticated: usize, validated: bool, limits: &Limits) -> Decision {
    if unauthenticated >= limits.max_unauthenticated {
        Decision::Refuse
    } else if !validated && unauthenticated >= limits.retry_from() {
        Decision::Retry
    } else {
        Decision::Admit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_threshold_is_a_share_of_the_cap() {
        assert_eq!(Limits::new(1024, 50).retry_from(), 512);
        assert_eq!(Limits::new(1024, 0).retry_from(), 0);
        assert_eq!(Limits::new(1024, 100).retry_from(), 1024);
        assert_eq!(Limits::new(1024, 250).retry_from(), 1024);
        assert_eq!(Limits::new(3, 50).retry_from(), 1);
    }

    #[test]
    fn decisions() {
        use Decision::{Admit, Refuse, Retry};
        let half = Limits::new(10, 50);
        let always = Limits::new(10, 0);
        let never = Limits::new(10, 100);
        let cases = [
            // (open, validated, limits, expected)
            (0, false, half, Admit),
            (4, false, half, Admit),
            (5, false, half, Retry),
            (5, true, half, Admit),
            (9, false, half, Retry),
            (9, true, half, Admit),
            (10, false, half, Refuse),
            (10, true, half, Refuse),
            (11, true, half, Refuse),
            (0, false, always, Retry),
            (0, true, always, Admit),
            (9, false, never, Admit),
            (10, false, never, Refuse),
        ];
        for (open, validated, limits, expected) in cases {
            assert_eq!(
                decide(open, validated, &limits),
                expected,
                "{open} open, validated {validated}, {limits:?}"
            );
        }
    }
}
