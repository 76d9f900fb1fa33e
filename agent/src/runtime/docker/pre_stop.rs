//! The pre-stop hook: run, and waited for, before SIGTERM on every stop,
//! so an application can leave its load balancer or finish its work. Its
//! outcome is never a reason to skip the stop: a hook that fails or hangs
//! only says so in the status reason.

use super::effects::Engine;
use super::probe;
use crate::runtime::spec::{PreStop, Probe};
use std::time::Duration;

/// How a pre-stop hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited with this code.
    Exited(i64),
    /// The GET answered this HTTP status.
    Answered(u16),
    /// It was still running when its time was up.
    TimedOut(Duration),
    /// It could not be run (no address, the engine refused the exec, ...).
    Failed(String),
}

impl Outcome {
    /// The sentence that goes into the status reason.
    pub fn reason(&self) -> String {
        match self {
            Outcome::Exited(code) => format!("pre-stop exited {code}"),
            Outcome::Answered(status) => format!("pre-stop answered {status}"),
            Outcome::TimedOut(limit) => format!("pre-stop timed out after {}", seconds(*limit)),
            Outcome::Failed(why) => format!("pre-stop failed: {why}"),
        }
    }
}

/// A duration as an operator writes it: `30s`, or `1500ms` when not whole.
fn seconds(limit: Duration) -> String {
    if limit.subsec_millis() == 0 {
        format!("{}s", limit.as_secs())
    } else {
        format!("{}ms", limit.as_millis())
    }
}

/// Runs `hook` against the container and waits at most `limit` (the hook's
/// timeout, shortened by a spot deadline).
pub async fn run<E: Engine>(
    engine: &E,
    hook: &PreStop,
    container_id: &str,
    ip: Option<&str>,
    limit: Duration,
) -> Outcome {
    let attempt = async {
        match &hook.action {
            Probe::Command(argv) => engine.exec(container_id, argv).await.map(Outcome::Exited),
            Probe::Http { path, port } => {
                let ip = ip.ok_or("the container has no address on the agent's network")?;
                probe::http_get(ip, *port, path)
                    .await
                    .map(|status| Outcome::Answered(status.as_u16()))
            }
        }
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(why)) => Outcome::Failed(why),
        Err(_) => Outcome::TimedOut(limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        for (outcome, reason) in [
            (Outcome::Exited(3), "pre-stop exited 3"),
            (Outcome::Exited(0), "pre-stop exited 0"),
            (Outcome::Answered(503), "pre-stop answered 503"),
            (
                Outcome::TimedOut(Duration::from_secs(30)),
                "pre-stop timed out after 30s",
            ),
            (
                Outcome::TimedOut(Duration::from_millis(1500)),
                "pre-stop timed out after 1500ms",
            ),
            (
                Outcome::Failed("no such container".into()),
                "pre-stop failed: no such container",
            ),
        ] {
            assert_eq!(outcome.reason(), reason);
        }
    }
}
