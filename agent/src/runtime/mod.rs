//! The container runtime, behind a trait: it watches the desired state and
//! reports every transition it makes. The Docker engine runtime implements
//! it; [`simulated::Simulated`] stands in where no container should run
//! (link tests, fleet benchmarks).

pub mod docker;
pub mod simulated;
pub mod spec;

use crate::state::Transition;
use flotilla_common::wire::messages::DesiredState;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Something that makes the desired state real.
pub trait Runtime: Send + 'static {
    /// Starts the runtime's task. It reads every new desired state from
    /// `desired` (the latest wins; intermediate ones may be skipped), sends
    /// each transition on `reports`, and carries out operator `commands`.
    /// It ends when `desired` closes.
    fn spawn(
        self: Box<Self>,
        desired: watch::Receiver<Arc<DesiredState>>,
        reports: mpsc::Sender<Transition>,
        commands: mpsc::Receiver<RuntimeCommand>,
    ) -> tokio::task::JoinHandle<()>;
}

/// An operator request for the runtime.
#[derive(Debug)]
pub enum RuntimeCommand {
    /// Restart, stop or start containers of a stack.
    Act(flotilla_common::wire::messages::Command),
    /// Stream a container's output into `sink` until it ends, `follow` is
    /// off and the backlog is sent, or the receiver is dropped. An `Err`
    /// item ends the stream with that reason.
    Logs {
        request: flotilla_common::wire::messages::LogsRequest,
        sink: mpsc::Sender<Result<Vec<u8>, String>>,
    },
    /// The VM goes away: every stop from now on must end by this instant,
    /// so stop grace periods are shortened to fit.
    Deadline(std::time::Instant),
    /// Stop every container now and for good: from here on the desired
    /// state no longer counts. `done` gets how many containers were still
    /// there to stop.
    Drain { done: oneshot::Sender<u32> },
}

/// The stop grace period that still fits before `stop_by`: what the spec
/// asks for, shortened so SIGKILL comes before the VM goes.
pub fn bounded_grace(wanted: Duration, stop_by: Option<std::time::Instant>) -> Duration {
    match stop_by {
        Some(at) => wanted.min(at.saturating_duration_since(std::time::Instant::now())),
        None => wanted,
    }
}

/// Runtime choices on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    /// The local Docker engine (the default).
    Docker,
    /// Runs nothing; reports every placement as started and running. For
    /// exercising the fleet link without containers.
    Simulated,
}

/// The runtime of a kind.
pub fn build(
    kind: RuntimeKind,
    agent_id: &str,
    store: &crate::state::AgentStore,
    docker: docker::DockerSettings,
    metrics: std::sync::Arc<crate::metrics::AgentMetrics>,
) -> Result<Box<dyn Runtime>, String> {
    Ok(match kind {
        RuntimeKind::Simulated => Box::new(simulated::Simulated),
        RuntimeKind::Docker => Box::new(docker::DockerRuntime::connect(
            docker,
            agent_id.to_owned(),
            store.clone(),
            metrics,
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_shortens_the_grace_never_lengthens_it() {
        let now = std::time::Instant::now();
        let secs = Duration::from_secs;
        for (wanted, stop_by, at_most, at_least) in [
            (secs(30), None, secs(30), secs(30)),
            (secs(30), Some(now + secs(600)), secs(30), secs(30)),
            (secs(30), Some(now + secs(5)), secs(5), secs(4)),
            (
                secs(30),
                Some(now - secs(5)),
                Duration::ZERO,
                Duration::ZERO,
            ),
        ] {
            let grace = bounded_grace(wanted, stop_by);
            assert!(
                grace <= at_most && grace >= at_least,
                "{wanted:?} {stop_by:?}: {grace:?}"
            );
        }
    }
}
