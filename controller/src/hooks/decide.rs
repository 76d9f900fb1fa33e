//! The dispatcher's decisions, pure: what an attempt's answer makes of a
//! delivery (delivered, retried later, failed), and whether a due
//! delivery may start now.

use crate::store::{DeliveryRecord, DeliveryState};
use std::time::Duration;

/// Attempts before a delivery is given up.
pub const MAX_ATTEMPTS: u32 = 8;
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The wait before attempt `attempts + 1`: 1 s, 2 s, 4 s, ... up to 5 min.
pub fn backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

/// How one attempt went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The receiver answered with this HTTP status.
    Status(u16),
    /// No answer within the attempt's time.
    TimedOut,
    /// No connection.
    CannotConnect,
    /// Any other failure of the request.
    Failed,
    /// The target is (now) an address deliveries may not go to.
    Refused,
}

/// The delivery after an attempt at `now_ms` answered `answer`.
pub fn after_attempt(mut delivery: DeliveryRecord, answer: Answer, now_ms: i64) -> DeliveryRecord {
    delivery.attempts += 1;
    let error = match answer {
        Answer::Status(status) if (200..300).contains(&status) => {
            delivery.state = DeliveryState::Delivered;
            delivery.last_status = Some(status);
            delivery.last_error = None;
            delivery.delivered_ms = Some(now_ms);
            return delivery;
        }
        Answer::Refused => {
            // Says nothing of the network behind the name; never retried.
            delivery.state = DeliveryState::Failed;
            delivery.last_status = None;
            delivery.last_error = Some("refused".into());
            return delivery;
        }
        Answer::Status(status) => {
            delivery.last_status = Some(status);
            format!("answered {status}")
        }
        Answer::TimedOut => "no answer in time".to_owned(),
        Answer::CannotConnect => "cannot connect".to_owned(),
        Answer::Failed => "request failed".to_owned(),
    };
    delivery.last_error = Some(error);
    if delivery.attempts >= MAX_ATTEMPTS {
        delivery.state = DeliveryState::Failed;
    } else {
        let wait = i64::try_from(backoff(delivery.attempts).as_millis()).unwrap_or(i64::MAX);
        delivery.next_attempt_ms = now_ms.saturating_add(wait);
    }
    delivery
}

/// A delivery given up without an attempt (its hook disabled, its event
/// pruned): failed with `reason`, its attempts unchanged.
pub fn given_up(delivery: DeliveryRecord, reason: &str) -> DeliveryRecord {
    DeliveryRecord {
        state: DeliveryState::Failed,
        last_error: Some(reason.to_owned()),
        ..delivery
    }
}

/// The metrics and log word for a delivery's state after an attempt.
pub fn outcome(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Delivered => "delivered",
        DeliveryState::Failed => "failed",
        DeliveryState::Pending => "retrying",
    }
}

/// Bounds on attempts running at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// In all.
    pub in_flight: usize,
    /// For the hooks of one user: one user's slow receivers can hold only
    /// this share of the attempts, never all of them.
    pub per_owner: usize,
}

/// What to do with a due delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Start its attempt.
    Start,
    /// Leave it due: its hook has an attempt running (at most one per
    /// hook), or its owner's share is taken.
    Wait,
    /// No room at all: stop looking this pass.
    Full,
}

/// Whether a due delivery starts now.
pub fn admit(limits: Limits, in_flight: usize, hook_busy: bool, owner_in_flight: usize) -> Admit {
    if in_flight >= limits.in_flight {
        Admit::Full
    } else if hook_busy || owner_in_flight >= limits.per_owner {
        Admit::Wait
    } else {
        Admit::Start
    }
}

/// Longest sleep between passes.
const IDLE: Duration = Duration::from_secs(1);

/// How long the dispatcher may sleep when the earliest head is due at
/// `first_due_ms`: until then, at most [`IDLE`]. A head already due
/// waits for a running attempt to end (which wakes the dispatcher too).
pub fn next_wake(first_due_ms: Option<i64>, now_ms: i64) -> Duration {
    match first_due_ms {
        Some(due) if due > now_ms => {
            Duration::from_millis(u64::try_from(due - now_ms).unwrap_or(0)).min(IDLE)
        }
        _ => IDLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    fn fresh(attempts: u32) -> DeliveryRecord {
        DeliveryRecord {
            id: "wh-a/1".into(),
            hook_id: "wh-a".into(),
            event_id: 1,
            event_type: "stack.created".into(),
            state: DeliveryState::Pending,
            attempts,
            last_status: Some(500),
            last_error: Some("answered 500".into()),
            next_attempt_ms: 0,
            created_ms: 0,
            delivered_ms: None,
        }
    }

    #[test]
    fn answers_table() {
        use DeliveryState::*;
        // (attempts before, answer, state, attempts after, status, error, next attempt)
        let cases = [
            (0, Answer::Status(204), Delivered, 1, Some(204), None, 0),
            (0, Answer::Status(200), Delivered, 1, Some(200), None, 0),
            (
                0,
                Answer::Status(302),
                Pending,
                1,
                Some(302),
                Some("answered 302"),
                1_000,
            ),
            (
                1,
                Answer::Status(500),
                Pending,
                2,
                Some(500),
                Some("answered 500"),
                2_000,
            ),
            (
                0,
                Answer::TimedOut,
                Pending,
                1,
                Some(500),
                Some("no answer in time"),
                1_000,
            ),
            (
                2,
                Answer::CannotConnect,
                Pending,
                3,
                Some(500),
                Some("cannot connect"),
                4_000,
            ),
            (
                0,
                Answer::Failed,
                Pending,
                1,
                Some(500),
                Some("request failed"),
                1_000,
            ),
            (0, Answer::Refused, Failed, 1, None, Some("refused"), 0),
            (
                7,
                Answer::TimedOut,
                Failed,
                8,
                Some(500),
                Some("no answer in time"),
                0,
            ),
            (7, Answer::Status(201), Delivered, 8, Some(201), None, 0),
        ];
        for (before, answer, state, attempts, status, error, next) in cases {
            let after = after_attempt(fresh(before), answer, 0);
            assert_eq!(after.state, state, "{answer:?} after {before}");
            assert_eq!(after.attempts, attempts, "{answer:?}");
            assert_eq!(after.last_status, status, "{answer:?}");
            assert_eq!(after.last_error.as_deref(), error, "{answer:?}");
            assert_eq!(after.next_attempt_ms, next, "{answer:?} after {before}");
            assert_eq!(after.delivered_ms.is_some(), state == Delivered);
        }
    }

    #[test]
    fn giving_up_keeps_the_attempts() {
        let after = given_up(fresh(3), "hook disabled");
        assert_eq!(after.state, DeliveryState::Failed);
        assert_eq!(after.attempts, 3);
        assert_eq!(after.last_error.as_deref(), Some("hook disabled"));
    }

    #[test]
    fn wake_table() {
        let cases = [
            (None, 1_000, IDLE),
            (Some(1_000), 1_000, IDLE),
            (Some(500), 1_000, IDLE),
            (Some(1_250), 1_000, Duration::from_millis(250)),
            (Some(9_000), 1_000, IDLE),
        ];
        for (due, now, expected) in cases {
            assert_eq!(next_wake(due, now), expected, "{due:?} at {now}");
        }
    }

    #[test]
    fn admission_table() {
        let limits = Limits {
            in_flight: 4,
            per_owner: 2,
        };
        // (running in all, hook busy, its owner's running, decision)
        let cases = [
            (0, false, 0, Admit::Start),
            (3, false, 1, Admit::Start),
            (0, true, 0, Admit::Wait),
            (1, false, 2, Admit::Wait),
            (3, true, 2, Admit::Wait),
            (4, false, 0, Admit::Full),
            (4, true, 2, Admit::Full),
        ];
        for (in_flight, busy, owner, expected) in cases {
            assert_eq!(
                admit(limits, in_flight, busy, owner),
                expected,
                "{in_flight} running, busy {busy}, owner {owner}"
            );
        }
    }
}
