//! Warnings about fleet connections the listener sheds (handshakes that
//! ran out of time or failed, attempts refused at the cap), aggregated: the first of
//! a kind in a window is logged with its address, the rest are summed into
//! one line per window, so a flood cannot flood the log. Every one is also
//! counted in `flotilla_fleet_connections_shed_total{reason}`.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The aggregation window: at most one line per kind with an address,
/// and one summary per kind, this often.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Why a connection was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The TLS handshake was not done by the deadline.
    TlsTimeout,
    /// The TLS handshake failed (no common protocol, a certificate the
    /// fleet CA did not issue, a broken peer).
    TlsFailed,
    /// TLS was done, but the stream, the preamble and the hello (or the
    /// enrollment request) were not.
    PreambleTimeout,
    /// Refused at accept: too many connections were unauthenticated.
    CapRefused,
}

impl Shed {
    const ALL: [Shed; 4] = [
        Shed::TlsTimeout,
        Shed::TlsFailed,
        Shed::PreambleTimeout,
        Shed::CapRefused,
    ];

    /// The metric and log label.
    pub fn name(self) -> &'static str {
        match self {
            Shed::TlsTimeout => "tls_timeout",
            Shed::TlsFailed => "tls_failed",
            Shed::PreambleTimeout => "preamble_timeout",
            Shed::CapRefused => "unauthenticated_cap",
        }
    }

    fn index(self) -> usize {
        match self {
            Shed::TlsTimeout => 0,
            Shed::TlsFailed => 1,
            Shed::PreambleTimeout => 2,
            Shed::CapRefused => 3,
        }
    }
}

/// Whether a window that started at `last` (if ever) is over at `now`.
fn window_over(last: Option<Instant>, now: Instant, window: Duration) -> bool {
    last.is_none_or(|last| now.saturating_duration_since(last) >= window)
}

#[derive(Debug, Default)]
struct Kind {
    logged_at: Option<Instant>,
    held: u64,
}

/// The aggregator; [`ShedLog::flush`] is called once per window.
#[derive(Debug)]
pub struct ShedLog {
    window: Duration,
    kinds: Mutex<[Kind; 4]>,
}

impl ShedLog {
    /// At most one line per kind with an address, and one summary, per
    /// `window`.
    pub fn new(window: Duration) -> ShedLog {
        ShedLog {
            window,
            kinds: Mutex::new(Default::default()),
        }
    }

    /// How often [`ShedLog::flush`] should run.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Notes one; true when it should be logged on its own now (else it
    /// is held for the summary).
    fn note(&self, shed: Shed, now: Instant) -> bool {
        let mut kinds = self
            .kinds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let kind = &mut kinds[shed.index()];
        if window_over(kind.logged_at, now, self.window) {
            kind.logged_at = Some(now);
            true
        } else {
            kind.held += 1;
            false
        }
    }

    /// Takes the held counts (kinds with none are left out).
    fn take_held(&self) -> Vec<(Shed, u64)> {
        let mut kinds = self
            .kinds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Shed::ALL
            .into_iter()
            .filter_map(|shed| {
                let held = std::mem::take(&mut kinds[shed.index()].held);
                (held > 0).then_some((shed, held))
            })
            .collect()
    }

    /// Logs one shed connection (with the error, if there is one), or
    /// holds it for the window's summary.
    pub fn record(&self, shed: Shed, remote: SocketAddr, error: Option<&str>) {
        if !self.note(shed, Instant::now()) {
            return;
        }
        let reason = shed.name();
        match shed {
            Shed::TlsFailed => tracing::warn!(
                reason,
                %remote,
                error,
                "fleet connection failed during the TLS handshake"
            ),
            _ => tracing::warn!(reason, %remote, error, "fleet connection shed"),
        }
    }

    /// Logs one summary line per kind held since the last flush.
    pub fn flush(&self) {
        let window_secs = self.window.as_secs();
        for (shed, count) in self.take_held() {
            tracing::warn!(
                reason = shed.name(),
                count,
                window_secs,
                "more fleet connections shed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        let now = Instant::now();
        let window = Duration::from_secs(10);
        let cases = [
            (None, now, true),
            (Some(now), now, false),
            (Some(now), now + Duration::from_secs(9), false),
            (Some(now), now + window, true),
            (Some(now + window), now, false),
        ];
        for (last, at, expected) in cases {
            assert_eq!(window_over(last, at, window), expected, "{last:?} {at:?}");
        }
    }

    #[test]
    fn a_flood_is_one_line_and_a_count() {
        let log = ShedLog::new(Duration::from_secs(10));
        let now = Instant::now();
        assert!(log.note(Shed::PreambleTimeout, now));
        for _ in 0..999 {
            assert!(!log.note(Shed::PreambleTimeout, now));
        }
        assert!(
            log.note(Shed::TlsTimeout, now),
            "kinds have their own windows"
        );
        assert_eq!(log.take_held(), vec![(Shed::PreambleTimeout, 999)]);
        assert_eq!(log.take_held(), vec![]);
        assert!(log.note(Shed::PreambleTimeout, now + Duration::from_secs(10)));
    }
}
