//! The one writer of the agent's outboxes: status transitions from the
//! runtime and lifecycle events (a notice, a finished drain) are numbered
//! and persisted here, in the order they happened. Transitions already
//! queued always go first, so a drain's `drained` follows the `terminated`
//! reports of the containers it stopped.

use crate::state::{AgentStore, StateError, Transition};
use flotilla_common::wire::messages::{LifecycleEvent, LifecycleReport};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Notify};

/// A lifecycle event to persist; `done` gets the numbered report.
pub struct LifecycleRequest {
    pub time_ms: i64,
    pub event: LifecycleEvent,
    pub done: oneshot::Sender<Result<LifecycleReport, StateError>>,
}

/// Persists until both channels close, waking the link after each write.
pub async fn run(
    store: AgentStore,
    outbox: Arc<Notify>,
    metrics: Arc<crate::metrics::AgentMetrics>,
    mut transitions: mpsc::Receiver<Transition>,
    mut lifecycle: mpsc::Receiver<LifecycleRequest>,
) {
    let (mut transitions_open, mut lifecycle_open) = (true, true);
    while transitions_open || lifecycle_open {
        tokio::select! {
            biased;
            transition = transitions.recv(), if transitions_open => match transition {
                Some(transition) => match store.push(transition).await {
                    Ok(report) => {
                        metrics.transition(&report.stack_id, &report.flag, &report.status.to_string());
                        tracing::debug!(seq = report.seq, stack_id = %report.stack_id, status = %report.status, "status recorded");
                        outbox.notify_one();
                    }
                    Err(err) => tracing::error!(error = %err, "cannot record a status report"),
                },
                None => transitions_open = false,
            },
            request = lifecycle.recv(), if lifecycle_open => match request {
                Some(request) => {
                    if matches!(request.event, LifecycleEvent::Notice(_)) {
                        metrics.notices.inc();
                    }
                    let result = store.push_lifecycle(request.time_ms, request.event).await;
                    if result.is_ok() {
                        outbox.notify_one();
                    }
                    let _ = request.done.send(result);
                }
                None => lifecycle_open = false,
            },
        }
    }
}
