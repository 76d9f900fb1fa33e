//! The controller's Prometheus metrics, served at `GET /metrics`
//! (OpenMetrics text, which Prometheus scrapes as is).
//!
//! Counters and histograms are updated where things happen (sessions, the
//! REST layer); gauges that mirror stored state (agents by state, store
//! size) are read from the store at scrape time, so they cannot drift.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Mutex;

/// Labels of a REST request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route template (`/v3/alm/stack/{stack_id}`), never the raw path.
    pub route: String,
    pub status: u16,
}

/// Labels of a route alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

/// Labels by outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// Labels by what a rate limit counts against (`caller`, `address`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    pub scope: String,
}

/// Labels by reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Labels by agent state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_duration: HistogramFamily<RouteLabels>,
    pub desired_pushes: Counter,
    pub desired_acks: Counter,
    /// Generations an agent could not assemble (it keeps the one it has).
    pub desired_refused: Counter,
    /// From a desired state's push to the agent's ack.
    pub ack_latency: Histogram,
    pub status_reports: Counter,
    pub lifecycle_reports: Counter,
    pub sessions_opened: Counter,
    pub agents: Family<StateLabels, Gauge>,
    pub agents_live: Gauge,
    pub store_bytes: Gauge,
    pub event_streams: Gauge,
    pub hook_deliveries: Family<OutcomeLabels, Counter>,
    /// Webhook attempts running now (bounded by `hooks::MAX_IN_FLIGHT`).
    pub hook_attempts: Gauge,
    /// Requests refused past a rate limit.
    pub rate_limited: Family<ScopeLabels, Counter>,
    /// Token requests refused unchecked (`slowed`, `locked`).
    pub secret_tries_refused: Family<OutcomeLabels, Counter>,
    /// (client id, address) pairs locked out after failed secrets.
    pub secret_lockouts: Counter,
    /// New fleet connections by admission decision (admitted, retried,
    /// refused).
    pub fleet_admissions: Family<OutcomeLabels, Counter>,
    /// Fleet connections shed by reason (timeouts, the cap).
    pub fleet_shed: Family<ReasonLabels, Counter>,
    /// Fleet connections not authenticated yet (set at scrape time).
    pub fleet_unauthenticated: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("flotilla");
        let metrics = Metrics {
            registry: Mutex::new(Registry::default()),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            desired_pushes: Counter::default(),
            desired_acks: Counter::default(),
            desired_refused: Counter::default(),
            ack_latency: latency_histogram(),
            status_reports: Counter::default(),
            lifecycle_reports: Counter::default(),
            sessions_opened: Counter::default(),
            agents: Family::default(),
            agents_live: Gauge::default(),
            store_bytes: Gauge::default(),
            event_streams: Gauge::default(),
            hook_deliveries: Family::default(),
            hook_attempts: Gauge::default(),
            rate_limited: Family::default(),
            secret_tries_refused: Family::default(),
            secret_lockouts: Counter::default(),
            fleet_admissions: Family::default(),
            fleet_shed: Family::default(),
            fleet_unauthenticated: Gauge::default(),
        };
        registry.register(
            "http_requests",
            "REST requests by method, route and status",
            metrics.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "REST request latency by route",
            metrics.http_duration.clone(),
        );
        registry.register(
            "desired_pushes",
            "Desired states pushed to agents",
            metrics.desired_pushes.clone(),
        );
        registry.register(
            "desired_acks",
            "Desired states acknowledged by agents",
            metrics.desired_acks.clone(),
        );
        registry.register(
            "desired_refused",
            "Desired states an agent refused to assemble",
            metrics.desired_refused.clone(),
        );
        registry.register(
            "desired_ack_latency_seconds",
            "Time from pushing a desired state to its acknowledgement",
            metrics.ack_latency.clone(),
        );
        registry.register(
            "status_reports",
            "Container status reports applied",
            metrics.status_reports.clone(),
        );
        registry.register(
            "lifecycle_reports",
            "Agent lifecycle reports (cloud notices, drains) received",
            metrics.lifecycle_reports.clone(),
        );
        registry.register(
            "sessions_opened",
            "Agent control sessions opened",
            metrics.sessions_opened.clone(),
        );
        registry.register("agents", "Enrolled agents by state", metrics.agents.clone());
        registry.register(
            "agents_connected",
            "Agents with a live control session",
            metrics.agents_live.clone(),
        );
        registry.register(
            "store_size_bytes",
            "Size of the store on disk",
            metrics.store_bytes.clone(),
        );
        registry.register(
            "event_streams",
            "Open event streams",
            metrics.event_streams.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, retrying, failed)",
            metrics.hook_deliveries.clone(),
        );
        registry.register(
            "webhook_attempts_in_flight",
            "Webhook attempts running now",
            metrics.hook_attempts.clone(),
        );
        registry.register(
            "http_rate_limited",
            "REST requests refused past a rate limit, by what it counts (caller, address)",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "secret_tries_refused",
            "Token requests refused without checking the secret (slowed, locked)",
            metrics.secret_tries_refused.clone(),
        );
        registry.register(
            "secret_lockouts",
            "Client id and address pairs locked out after failed secrets",
            metrics.secret_lockouts.clone(),
        );
        registry.register(
            "fleet_admissions",
            "New fleet connections by admission decision (admitted, retried, refused)",
            metrics.fleet_admissions.clone(),
        );
        registry.register(
            "fleet_connections_shed",
            "Fleet connections shed (tls_timeout, tls_failed, preamble_timeout, unauthenticated_cap)",
            metrics.fleet_shed.clone(),
        );
        registry.register(
            "fleet_unauthenticated_connections",
            "Fleet connections between accept and a verified hello or enrollment request",
            metrics.fleet_unauthenticated.clone(),
        );
        if let Ok(mut slot) = metrics.registry.lock() {
            *slot = registry;
        }
        metrics
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}
