//! The agent process's tasks, started together by [`start`] and stopped
//! together when its shutdown future resolves: the fleet link, the
//! runtime, the reporter, the lifecycle (spot notices and drains), the
//! metrics server and the cloud watcher. `main.rs` only turns the command
//! line, environment and file into a [`Config`]; tests call [`start`]
//! directly.
//!
//! Stopping is a signal, not an abort: the link closes its session, the
//! runtime stops taking desired states (its slots finish the step they are
//! in; containers stay running), and the reporter writes every transition
//! still queued to the outbox before it ends. Only if that takes longer
//! than [`STOP_WITHIN`] is the rest cut off (and logged), so a stop stays
//! within systemd's `TimeoutStopSec`.

use crate::identity::Identity;
use crate::link::{Link, LinkSettings};
use crate::runtime::{docker::DockerSettings, RuntimeKind};
use crate::state::{AgentStore, StateError};
use flotilla_common::wire::messages::DesiredState;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

/// How long a stop waits for the tasks to finish before it cuts them off.
pub const STOP_WITHIN: Duration = Duration::from_secs(25);

/// Everything the agent runs with, resolved.
pub struct Config {
    pub identity: Identity,
    pub data_dir: PathBuf,
    pub runtime: RuntimeKind,
    pub docker: DockerSettings,
    /// The agent's labels (the cloud's facts and the operator's).
    pub labels: BTreeMap<String, String>,
    pub max_frame: usize,
    pub max_backoff: Duration,
    /// UDP segmentation offload for QUIC.
    pub gso: bool,
    /// Where to serve metrics (`None`: nowhere).
    pub metrics_listen: Option<SocketAddr>,
    /// The cloud whose metadata service to watch for notices, if any.
    pub watch: Option<crate::spot::watch::WatchSettings>,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StateError),
    #[error("{0}")]
    Runtime(String),
}

/// The running agent.
pub struct AgentHandle {
    /// Where metrics are served (the bound address).
    pub metrics_addr: Option<SocketAddr>,
    store: AgentStore,
    done: JoinHandle<()>,
}

impl AgentHandle {
    /// The agent's store (for a watchdog that checks it answers).
    pub fn store(&self) -> &AgentStore {
        &self.store
    }

    /// Waits until the agent has stopped (its shutdown future resolved and
    /// its tasks finished), then flushes its store.
    pub async fn wait(self) -> Result<(), StateError> {
        if let Err(err) = self.done.await {
            tracing::error!(error = %err, "the agent's stop task failed");
        }
        self.store.flush().await?;
        tracing::info!(
            outbox = self.store.outbox_len(),
            "agent stopped; containers left running"
        );
        Ok(())
    }
}

/// Starts every task of the agent; they stop when `shutdown` resolves.
pub async fn start(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<AgentHandle, StartError> {
    let Config {
        identity,
        data_dir,
        runtime,
        docker,
        labels,
        max_frame,
        max_backoff,
        gso,
        metrics_listen,
        watch: watch_settings,
    } = config;
    let store = AgentStore::open(&data_dir.join("state"))?;
    let empty = DesiredState {
        generation: 0,
        placements: Vec::new(),
    };
    // A drained agent (its VM is going) starts nothing again.
    let initial = if store.drained()? {
        empty
    } else {
        store.desired()?.unwrap_or(empty)
    };
    let (desired_tx, desired_rx) = watch::channel(Arc::new(initial));
    let outbox = Arc::new(Notify::new());
    let (reports_tx, reports_rx) = mpsc::channel(256);
    let (commands_tx, commands_rx) = mpsc::channel(64);
    let metrics = Arc::new(crate::metrics::AgentMetrics::new());
    let runtime_task = crate::runtime::build(
        runtime,
        &identity.enrollment.agent_id,
        &store,
        docker,
        metrics.clone(),
    )
    .map_err(StartError::Runtime)?
    .spawn(desired_rx, reports_tx, commands_rx);
    let (lifecycle_tx, lifecycle_rx) = mpsc::channel(16);
    let reporter = tokio::spawn(crate::reporter::run(
        store.clone(),
        outbox.clone(),
        metrics.clone(),
        reports_rx,
        lifecycle_rx,
    ));
    tracing::info!(
        agent_id = %identity.enrollment.agent_id,
        instance_id = %identity.enrollment.instance_id,
        controller = %identity.enrollment.controller,
        runtime = ?runtime,
        "agent starting"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let (connected_tx, connected_rx) = watch::channel(false);
    let mut metrics_addr = None;
    let metrics_server = match metrics_listen {
        Some(listen) => {
            match crate::metrics::serve(
                listen,
                metrics.clone(),
                store.clone(),
                connected_rx.clone(),
            )
            .await
            {
                Ok((bound, task)) => {
                    tracing::info!(listen = %bound, "metrics listening");
                    metrics_addr = Some(bound);
                    Some(task)
                }
                Err(err) => {
                    tracing::warn!(listen = %listen, error = %err, "cannot serve metrics; running without");
                    None
                }
            }
        }
        None => None,
    };
    let (notice_tx, notice_rx) = mpsc::channel(16);
    // The watcher only polls: stopping it loses nothing.
    let watcher = watch_settings.map(|settings| {
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = crate::spot::watch::watch(settings, notice_tx) => {}
                _ = stop.wait_for(|stop| *stop) => {}
            }
        })
    });
    let lifecycle = tokio::spawn(
        crate::lifecycle::Lifecycle {
            store: store.clone(),
            instance_id: identity.enrollment.instance_id.clone(),
            rest_token: crate::identity::rest_token_path(&data_dir),
            rest_tls: crate::tls::rest_client_config(identity.ca_certificate()),
            recorder: lifecycle_tx,
            connected: connected_rx,
            desired: desired_tx.subscribe(),
            commands: commands_tx.clone(),
        }
        .run(notice_rx),
    );
    let link = Link {
        identity,
        store: store.clone(),
        settings: LinkSettings {
            max_frame,
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            gso,
            labels,
            data_dir: data_dir.clone(),
            max_backoff,
        },
        desired: desired_tx,
        outbox,
        commands: commands_tx,
        connected: connected_tx,
    };
    let link_task = tokio::spawn(link.run(stop_rx));
    let done = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        // In order: the link (its end closes the desired state, which ends
        // the runtime), the watcher (its end closes the notices, which ends
        // the lifecycle), then the reporter (it ends once every sender of
        // a transition is gone, after writing what they sent).
        let stopping = async {
            let _ = link_task.await;
            if let Some(watcher) = watcher {
                let _ = watcher.await;
            }
            let _ = runtime_task.await;
            let _ = lifecycle.await;
            let _ = reporter.await;
        };
        if tokio::time::timeout(STOP_WITHIN, stopping).await.is_err() {
            tracing::warn!(
                within_secs = STOP_WITHIN.as_secs(),
                "the agent's tasks did not finish in time; stopping anyway"
            );
        }
        if let Some(server) = metrics_server {
            server.abort();
        }
    });
    Ok(AgentHandle {
        metrics_addr,
        store,
        done,
    })
}
