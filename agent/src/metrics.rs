//! The agent's Prometheus metrics, served on a local port (`GET /metrics`,
//! `--metrics-listen`, default `127.0.0.1:9110`, `off` to disable).
//!
//! Counters are bumped where things happen (the reporter, the Docker
//! slots); gauges that mirror state (containers by status, outbox depth,
//! the link) are read at scrape time.

use crate::state::AgentStore;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Labels by container status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

/// Labels by outcome (`ok`, `error`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// Every metric the agent exports.
pub struct AgentMetrics {
    registry: Mutex<Registry>,
    /// Last status per (stack, flag), for the containers gauge.
    last_status: Mutex<HashMap<(String, String), String>>,
    pub containers: Family<StatusLabels, Gauge>,
    pub status_reports: Family<StatusLabels, Counter>,
    pub restarts: Counter,
    pub pulls: Family<ResultLabels, Counter>,
    /// How long a slot takes to make a change real (start or update).
    pub reconcile: Histogram,
    pub outbox: Gauge,
    pub lifecycle_outbox: Gauge,
    pub link_connected: Gauge,
    pub notices: Counter,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics::new()
    }
}

impl AgentMetrics {
    /// Creates and registers every metric.
    pub fn new() -> AgentMetrics {
        let mut registry = Registry::with_prefix("flotilla_agent");
        let m = AgentMetrics {
            registry: Mutex::new(Registry::default()),
            last_status: Mutex::new(HashMap::new()),
            containers: Family::default(),
            status_reports: Family::default(),
            restarts: Counter::default(),
            pulls: Family::default(),
            reconcile: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            outbox: Gauge::default(),
            lifecycle_outbox: Gauge::default(),
            link_connected: Gauge::default(),
            notices: Counter::default(),
        };
        registry.register(
            "containers",
            "Placed containers by last reported status",
            m.containers.clone(),
        );
        registry.register(
            "status_reports",
            "Status transitions reported, by status",
            m.status_reports.clone(),
        );
        registry.register(
            "restarts",
            "Container restarts by the agent's restart policy",
            m.restarts.clone(),
        );
        registry.register("pulls", "Image pulls by result", m.pulls.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Time to start or update a container until it runs or fails",
            m.reconcile.clone(),
        );
        registry.register(
            "outbox_reports",
            "Status reports not yet acknowledged by the controller",
            m.outbox.clone(),
        );
        registry.register(
            "lifecycle_outbox_reports",
            "Lifecycle reports (notices, drains) not yet acknowledged",
            m.lifecycle_outbox.clone(),
        );
        registry.register(
            "link_connected",
            "1 while the fleet link to the controller is up",
            m.link_connected.clone(),
        );
        registry.register(
            "cloud_notices",
            "Spot or preemption notices seen",
            m.notices.clone(),
        );
        if let Ok(mut slot) = m.registry.lock() {
            *slot = registry;
        }
        m
    }

    /// Counts a status transition and moves the containers gauge.
    pub fn transition(&self, stack_id: &str, flag: &str, status: &str) {
        self.status_reports
            .get_or_create(&StatusLabels {
                status: status.into(),
            })
            .inc();
        if status == "restarting" {
            self.restarts.inc();
        }
        let Ok(mut last) = self.last_status.lock() else {
            return;
        };
        let key = (stack_id.to_owned(), flag.to_owned());
        if let Some(before) = last.get(&key) {
            self.containers
                .get_or_create(&StatusLabels {
                    status: before.clone(),
                })
                .dec();
        }
        if status == "terminated" {
            last.remove(&key);
        } else {
            self.containers
                .get_or_create(&StatusLabels {
                    status: status.into(),
                })
                .inc();
            last.insert(key, status.to_owned());
        }
    }

    /// Counts a pull.
    pub fn pulled(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.pulls
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// The text exposition, with the state gauges read now.
    pub fn encode(&self, store: &AgentStore, connected: bool) -> Result<String, std::fmt::Error> {
        self.outbox
            .set(i64::try_from(store.outbox_len()).unwrap_or(i64::MAX));
        let lifecycle = store.pending_lifecycle(0).map_or(0, |p| p.len());
        self.lifecycle_outbox
            .set(i64::try_from(lifecycle).unwrap_or(i64::MAX));
        self.link_connected.set(i64::from(connected));
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// Serves `GET /metrics` on `listen` until the process ends. Binding
/// failures are the caller's to report (the agent runs on without).
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<AgentMetrics>,
    store: AgentStore,
    connected: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use axum::http::{header, StatusCode};
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (metrics, store, connected) = (metrics.clone(), store.clone(), connected.clone());
            async move {
                let up = *connected.borrow();
                match metrics.encode(&store, up) {
                    Ok(body) => (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    ),
                    Err(_) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                        "metrics encoding failed\n".to_owned(),
                    ),
                }
            }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::warn!(error = %err, "metrics server stopped");
        }
    });
    Ok((bound, task))
}
