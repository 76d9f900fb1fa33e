//! What a slot does next, decided from what is there, what is wanted and
//! what the agent remembers, never from which event arrived: the loop calls
//! [`decide`] after every step and every wake-up, so a lost or repeated
//! event changes nothing, and a failure is looked at again when its retry
//! is due.

use crate::runtime::spec::Restart;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The slot's container as the engine last showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Its spec hash (the version and its settings).
    pub hash: String,
    /// Stopped for a hold (an operator's stop, or the stack's).
    pub down: bool,
}

/// What the desired state asks of the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub hash: String,
    pub version_id: String,
    /// The stack is stopped by its operator.
    pub held: bool,
}

/// A spec that failed to start, and when it may be tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub hash: String,
    /// `None`: not until the spec changes (it cannot run as written, or it
    /// failed as an update and the old container serves on).
    pub retry_at: Option<Instant>,
}

/// What the slot remembers between steps (the hold is also on disk).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// An operator stopped this instance.
    pub held: bool,
    pub failure: Option<Failure>,
    /// The restart policy gave up on the container of this hash.
    pub gave_up: Option<String>,
    /// When the pending restart of a dead container is due.
    pub restart_at: Option<Instant>,
    /// The version last reported `stopped`.
    pub reported_stopped: Option<String>,
}

/// One thing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing wanted, nothing there: forget the hold and end the slot.
    Finish,
    /// Stop (pre-stop hook, SIGTERM, grace) and remove a container nobody
    /// wants, reporting it.
    Retire,
    /// Held, and a new version came: the old container goes, the new one
    /// waits for the start.
    RetireForNewVersion,
    /// Held with nothing there: report the version `stopped`.
    RecordHeld,
    /// Held and running: stop it and keep it.
    StopForHold,
    /// The hold is gone: start the kept container again.
    Resume,
    /// Create and start a container for the wanted version.
    Start,
    /// Replace the container with one for the wanted version.
    Update,
    /// Start the dead container again (restart policy).
    Restart,
    /// Nothing to do until something changes, or until this instant.
    Wait(Option<Instant>),
}

/// See the module documentation.
pub fn decide(
    observed: Option<&Observed>,
    wanted: Option<&Want>,
    memory: &Memory,
    now: Instant,
) -> Step {
    let Some(want) = wanted else {
        return match observed {
            None => Step::Finish,
            Some(_) => Step::Retire,
        };
    };
    let hold = memory.held || want.held;
    // A failure of this very spec blocks it until its retry is due.
    let blocked = memory
        .failure
        .as_ref()
        .filter(|f| f.hash == want.hash)
        .map(|f| match f.retry_at {
            Some(at) if at <= now => None,
            other => Some(other),
        });
    match observed {
        None if hold => {
            if memory.reported_stopped.as_deref() == Some(want.version_id.as_str()) {
                Step::Wait(None)
            } else {
                Step::RecordHeld
            }
        }
        None => match blocked {
            Some(Some(until)) => Step::Wait(until),
            _ if memory.gave_up.as_deref() == Some(want.hash.as_str()) => Step::Wait(None),
            _ => Step::Start,
        },
        Some(live) if hold && live.hash != want.hash => Step::RetireForNewVersion,
        Some(live) if hold && !live.down => Step::StopForHold,
        Some(_) if hold => Step::Wait(None),
        Some(live) if live.down => Step::Resume,
        Some(live) if live.hash != want.hash => match blocked {
            Some(Some(until)) => Step::Wait(until),
            _ => Step::Update,
        },
        Some(_) => match memory.restart_at {
            Some(at) if at <= now => Step::Restart,
            at => Step::Wait(at),
        },
    }
}

/// Restarts within this window count toward giving up (`always`).
pub const CRASH_WINDOW: Duration = Duration::from_secs(300);
/// Restarts within the window before a container is `app-crashed`.
pub const CRASH_LIMIT: usize = 5;

/// The restart history of a slot's container.
#[derive(Debug, Clone, Default)]
pub struct Crashes {
    /// Restarts within [`CRASH_WINDOW`].
    pub recent: VecDeque<Instant>,
    /// Restarts since the container last started healthy.
    pub total: u32,
}

/// After a container died: the delay before its restart, or `None` when the
/// policy gives up. `failed`: it died of a failure (non-zero exit, failed
/// probe), not a clean exit. Drops restarts older than the window.
pub fn restart_delay(
    policy: Restart,
    crashes: &mut Crashes,
    failed: bool,
    now: Instant,
) -> Option<Duration> {
    while crashes
        .recent
        .front()
        .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
    {
        crashes.recent.pop_front();
    }
    let restart = match policy {
        Restart::Never => false,
        Restart::OnFailure { max_attempts } => failed && crashes.total < max_attempts,
        Restart::Always => crashes.recent.len() < CRASH_LIMIT,
    };
    restart.then(|| Duration::from_secs(1 << crashes.total.min(5)).min(Duration::from_secs(30)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(hash: &str, down: bool) -> Observed {
        Observed {
            hash: hash.into(),
            down,
        }
    }

    fn want(hash: &str, held: bool) -> Want {
        Want {
            hash: hash.into(),
            version_id: format!("v-{hash}"),
            held,
        }
    }

    #[test]
    fn decide_table() {
        let now = Instant::now();
        let later = now + Duration::from_secs(4);
        let earlier = now - Duration::from_secs(1);
        let none = Memory::default();
        let held = Memory {
            held: true,
            ..Memory::default()
        };
        let failed = |hash: &str, retry_at| Memory {
            failure: Some(Failure {
                hash: hash.into(),
                retry_at,
            }),
            ..Memory::default()
        };
        let gave_up = Memory {
            gave_up: Some("a".into()),
            ..Memory::default()
        };
        let restart = |at| Memory {
            restart_at: Some(at),
            ..Memory::default()
        };
        let reported = Memory {
            held: true,
            reported_stopped: Some("v-a".into()),
            ..Memory::default()
        };
        for (name, observed, wanted, memory, step) in [
            ("gone and unwanted", None, None, &none, Step::Finish),
            (
                "unwanted",
                Some(seen("a", false)),
                None,
                &none,
                Step::Retire,
            ),
            (
                "unwanted while held",
                Some(seen("a", true)),
                None,
                &held,
                Step::Retire,
            ),
            (
                "first start",
                None,
                Some(want("a", false)),
                &none,
                Step::Start,
            ),
            (
                "steady",
                Some(seen("a", false)),
                Some(want("a", false)),
                &none,
                Step::Wait(None),
            ),
            (
                "new version",
                Some(seen("a", false)),
                Some(want("b", false)),
                &none,
                Step::Update,
            ),
            // A start failure is tried again when its retry is due, not
            // only when a new version comes.
            (
                "start failed, retry not due",
                None,
                Some(want("a", false)),
                &failed("a", Some(later)),
                Step::Wait(Some(later)),
            ),
            (
                "start failed, retry due",
                None,
                Some(want("a", false)),
                &failed("a", Some(earlier)),
                Step::Start,
            ),
            (
                "cannot run as written",
                None,
                Some(want("a", false)),
                &failed("a", None),
                Step::Wait(None),
            ),
            (
                "a new spec after a failure",
                None,
                Some(want("b", false)),
                &failed("a", None),
                Step::Start,
            ),
            (
                "update failed, old serves",
                Some(seen("a", false)),
                Some(want("b", false)),
                &failed("b", None),
                Step::Wait(None),
            ),
            (
                "update failed, retry due",
                Some(seen("a", false)),
                Some(want("b", false)),
                &failed("b", Some(earlier)),
                Step::Update,
            ),
            // A failed redeploy of the running spec does not stop a
            // container removed from outside from being made again.
            (
                "removed outside after a failure of another spec",
                None,
                Some(want("a", false)),
                &failed("b", None),
                Step::Start,
            ),
            (
                "gave up",
                Some(seen("a", false)),
                Some(want("a", false)),
                &gave_up,
                Step::Wait(None),
            ),
            (
                "gave up, then removed",
                None,
                Some(want("a", false)),
                &gave_up,
                Step::Wait(None),
            ),
            (
                "gave up, new version",
                None,
                Some(want("b", false)),
                &gave_up,
                Step::Start,
            ),
            (
                "restart due",
                Some(seen("a", false)),
                Some(want("a", false)),
                &restart(earlier),
                Step::Restart,
            ),
            (
                "restart pending",
                Some(seen("a", false)),
                Some(want("a", false)),
                &restart(later),
                Step::Wait(Some(later)),
            ),
            // Holds: the instance's (memory) and the stack's (wanted).
            (
                "instance held, running",
                Some(seen("a", false)),
                Some(want("a", false)),
                &held,
                Step::StopForHold,
            ),
            (
                "stack held, running",
                Some(seen("a", false)),
                Some(want("a", true)),
                &none,
                Step::StopForHold,
            ),
            (
                "held and down",
                Some(seen("a", true)),
                Some(want("a", false)),
                &held,
                Step::Wait(None),
            ),
            (
                "hold released",
                Some(seen("a", true)),
                Some(want("a", false)),
                &none,
                Step::Resume,
            ),
            (
                "held, new version",
                Some(seen("a", true)),
                Some(want("b", true)),
                &none,
                Step::RetireForNewVersion,
            ),
            (
                "held, nothing there",
                None,
                Some(want("a", false)),
                &held,
                Step::RecordHeld,
            ),
            (
                "held, recorded",
                None,
                Some(want("a", false)),
                &reported,
                Step::Wait(None),
            ),
            (
                "held, a due restart waits",
                Some(seen("a", true)),
                Some(want("a", true)),
                &restart(earlier),
                Step::Wait(None),
            ),
        ] {
            assert_eq!(
                decide(observed.as_ref(), wanted.as_ref(), memory, now),
                step,
                "{name}"
            );
        }
    }

    #[test]
    fn restart_policy_table() {
        let now = Instant::now();
        let old = now - CRASH_WINDOW - Duration::from_secs(1);
        let recent = |n: usize, total: u32| Crashes {
            recent: std::iter::repeat_n(now, n).collect(),
            total,
        };
        for (name, policy, mut crashes, failed, delay) in [
            (
                "always, first",
                Restart::Always,
                Crashes::default(),
                true,
                Some(1),
            ),
            (
                "always, clean exit",
                Restart::Always,
                Crashes::default(),
                false,
                Some(1),
            ),
            (
                "always, backs off",
                Restart::Always,
                recent(3, 3),
                true,
                Some(8),
            ),
            (
                "always, capped at 30 s",
                Restart::Always,
                recent(4, 9),
                true,
                Some(30),
            ),
            (
                "always, gives up",
                Restart::Always,
                recent(CRASH_LIMIT, 5),
                true,
                None,
            ),
            (
                "always, old crashes lapse",
                Restart::Always,
                Crashes {
                    recent: std::iter::repeat_n(old, CRASH_LIMIT).collect(),
                    total: 1,
                },
                true,
                Some(2),
            ),
            ("never", Restart::Never, Crashes::default(), true, None),
            (
                "on-failure, clean exit",
                Restart::OnFailure { max_attempts: 3 },
                Crashes::default(),
                false,
                None,
            ),
            (
                "on-failure, failure",
                Restart::OnFailure { max_attempts: 3 },
                recent(2, 2),
                true,
                Some(4),
            ),
            (
                "on-failure, attempts used",
                Restart::OnFailure { max_attempts: 3 },
                recent(3, 3),
                true,
                None,
            ),
        ] {
            assert_eq!(
                restart_delay(policy, &mut crashes, failed, now),
                delay.map(Duration::from_secs),
                "{name}"
            );
        }
    }
}
