//! What the agent does when its VM is going away.
//!
//! A notice from the metadata watcher is persisted in the lifecycle outbox
//! (once per action, even across restarts) and wakes the link, which sends
//! it at once. If the link is down, or the controller has not acknowledged
//! it within [`ACK_PATIENCE`], the REST fallback posts it as well.
//!
//! A final notice (not a rebalance) starts the drain: every stop from then
//! on is bounded to end [`STOP_MARGIN`] before the deadline. The agent
//! waits for the controller to move its placements (each is released once
//! its replacement runs elsewhere); at [`FORCE_BEFORE`] the deadline it
//! stops whatever is left itself. When everything is stopped it reports
//! that it drained. A drain a restart interrupted resumes at start.

use crate::reporter::LifecycleRequest;
use crate::runtime::RuntimeCommand;
use crate::spot::{fallback, Notice};
use crate::state::{AgentStore, StateError};
use flotilla_common::time::now_ms;
use flotilla_common::wire::messages::{CloudNotice, DesiredState, LifecycleEvent, LifecycleReport};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// How long an unacknowledged notice waits on the link before the REST
/// fallback is tried too.
pub const ACK_PATIENCE: Duration = Duration::from_secs(2);
/// Stops end this long before the deadline.
pub const STOP_MARGIN: Duration = Duration::from_secs(5);
/// The agent stops what the controller has not moved this long before the
/// deadline (so grace periods of up to `FORCE_BEFORE - STOP_MARGIN` fit).
pub const FORCE_BEFORE: Duration = Duration::from_secs(25);
/// Pause between REST fallback attempts.
const RETRY: Duration = Duration::from_millis(500);

/// Everything the lifecycle handler works with.
#[derive(Clone)]
pub struct Lifecycle {
    pub store: AgentStore,
    pub instance_id: String,
    /// The file holding this agent's REST token (see
    /// [`crate::identity::rest_token_path`]).
    pub rest_token: std::path::PathBuf,
    /// TLS for the REST fallback when the controller serves HTTPS (the
    /// pinned fleet CA and the system's roots).
    pub rest_tls: Arc<rustls::ClientConfig>,
    /// Persists lifecycle events (after any status already queued).
    pub recorder: mpsc::Sender<LifecycleRequest>,
    /// Whether the link has a session.
    pub connected: watch::Receiver<bool>,
    pub desired: watch::Receiver<Arc<DesiredState>>,
    pub commands: mpsc::Sender<RuntimeCommand>,
}

/// The monotonic instant of a wall-clock time (now, if it is past).
fn instant_at(ms: i64) -> Instant {
    let ahead = u64::try_from(ms.saturating_sub(now_ms())).unwrap_or(0);
    Instant::now() + Duration::from_millis(ahead)
}

impl Lifecycle {
    /// Persists an event through the reporter.
    async fn record(&self, event: LifecycleEvent) -> Result<LifecycleReport, String> {
        let (done, result) = oneshot::channel();
        let request = LifecycleRequest {
            time_ms: now_ms(),
            event,
            done,
        };
        if self.recorder.send(request).await.is_err() {
            return Err("the reporter stopped".into());
        }
        match result.await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(err)) => Err(StateError::to_string(&err)),
            Err(_) => Err("the reporter stopped".into()),
        }
    }

    /// Resumes an interrupted drain, then handles notices until `notices`
    /// closes.
    pub async fn run(self, mut notices: mpsc::Receiver<Notice>) {
        let mut draining = match (self.store.final_notice(), self.store.drained()) {
            (Ok(Some((_, notice))), Ok(false)) => {
                tracing::warn!(action = %notice.action, deadline_ms = ?notice.deadline_ms, "resuming the drain after a restart");
                tokio::spawn(self.clone().drain(notice));
                true
            }
            (Ok(_), Ok(true)) => {
                // Drained before a restart: the VM is going; start nothing
                // again, whatever the last desired state says.
                tracing::warn!("this agent has drained; keeping its containers stopped");
                let (done, _) = oneshot::channel();
                let _ = self.commands.send(RuntimeCommand::Drain { done }).await;
                true
            }
            (Ok(_), Ok(false)) => false,
            (Err(err), _) | (_, Err(err)) => {
                tracing::error!(error = %err, "cannot read the lifecycle state");
                false
            }
        };
        while let Some(notice) = notices.recv().await {
            let wire = notice.to_wire(now_ms());
            match self.store.notice(&wire.action) {
                Ok(None) => {}
                Ok(Some(_)) => continue,
                Err(err) => {
                    tracing::error!(error = %err, "cannot read the lifecycle state");
                    continue;
                }
            }
            let report = match self.record(LifecycleEvent::Notice(wire.clone())).await {
                Ok(report) => report,
                Err(err) => {
                    tracing::error!(error = %err, "cannot record a cloud notice");
                    continue;
                }
            };
            tracing::warn!(
                cloud = %wire.cloud,
                action = %wire.action,
                deadline_ms = ?wire.deadline_ms,
                id = report.id,
                "cloud notice"
            );
            tokio::spawn(self.clone().fallback(report, wire.clone()));
            if wire.is_final() && !draining {
                draining = true;
                tokio::spawn(self.clone().drain(wire));
            }
        }
    }

    /// Posts the notice over REST while the link is down or slow to
    /// acknowledge, until one of the two delivers it.
    async fn fallback(self, report: LifecycleReport, notice: CloudNotice) {
        let started = Instant::now();
        let give_up = instant_at(notice.deadline_ms.unwrap_or(now_ms() + 600_000) + 60_000);
        let mut last_error: Option<String> = None;
        while self.store.lifecycle_pending(report.id) && Instant::now() < give_up {
            let link_up = *self.connected.borrow();
            if !link_up || started.elapsed() >= ACK_PATIENCE {
                match fallback::post(
                    &self.store,
                    &self.rest_token,
                    &self.instance_id,
                    &report,
                    &notice,
                    &self.rest_tls,
                )
                .await
                {
                    Ok(()) => return,
                    Err(err) => {
                        let text = err.to_string();
                        if last_error.as_deref() != Some(text.as_str()) {
                            tracing::warn!(error = %text, id = report.id, "REST fallback for the notice failed; retrying");
                        }
                        last_error = Some(text);
                    }
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Drains: bound every stop by the deadline, give the controller until
    /// [`FORCE_BEFORE`] the deadline to move the placements, stop what is
    /// left, report drained.
    async fn drain(mut self, notice: CloudNotice) {
        let deadline_ms = notice.deadline_ms.unwrap_or(now_ms() + 30_000);
        let margin = i64::try_from(STOP_MARGIN.as_millis()).unwrap_or(0);
        let force = i64::try_from(FORCE_BEFORE.as_millis()).unwrap_or(0);
        let stop_by = instant_at(deadline_ms - margin);
        let force_at = instant_at(deadline_ms - force);
        let _ = self.commands.send(RuntimeCommand::Deadline(stop_by)).await;
        let forced = loop {
            if self.desired.borrow_and_update().placements.is_empty() {
                break false;
            }
            tokio::select! {
                changed = self.desired.changed() => {
                    if changed.is_err() {
                        break true;
                    }
                }
                () = tokio::time::sleep_until(force_at.into()) => break true,
            }
        };
        tracing::warn!(forced, "draining this VM's containers");
        let (done, stopped) = oneshot::channel();
        let _ = self.commands.send(RuntimeCommand::Drain { done }).await;
        let wait_until = stop_by + STOP_MARGIN;
        let stopped = match tokio::time::timeout_at(wait_until.into(), stopped).await {
            Ok(Ok(count)) => count,
            _ => {
                tracing::error!("the runtime did not finish draining before the deadline");
                0
            }
        };
        match self.record(LifecycleEvent::Drained { stopped }).await {
            Ok(report) => {
                tracing::warn!(stopped, id = report.id, "drained");
            }
            Err(err) => tracing::error!(error = %err, "cannot record the drain"),
        }
    }
}
