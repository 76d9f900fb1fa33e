//! Starting and stopping the controller: data dir, store, bootstrap admin,
//! background tasks, and the HTTP server with graceful shutdown.

use crate::api::state::{ApiSettings, AppState};
use crate::auth::clients;
use crate::config::Config;
use crate::fleet::pki::Pki;
use crate::fleet::Fleet;
use crate::store::Store;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Notify;
use tracing::Instrument;

/// File in the data dir holding the first admin client's credentials.
pub const ADMIN_CREDENTIALS_FILE: &str = "admin-credentials.json";
/// Variables that fix the bootstrap admin's credentials (for automation).
pub const BOOTSTRAP_ID_VAR: &str = "FLOTILLA_BOOTSTRAP_CLIENT_ID";
pub const BOOTSTRAP_SECRET_VAR: &str = "FLOTILLA_BOOTSTRAP_CLIENT_SECRET";

/// Client credentials as written to (and read from) a 0600 file.
#[derive(Debug, Serialize, Deserialize)]
pub struct CredentialsFile {
    pub client_id: String,
    pub client_secret: String,
}

pub use flotilla_common::files::write_private;

/// Creates the data dir if needed and makes it private (0700): it holds
/// the admin credentials and, later, keys.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    let old = flotilla_common::files::private_dir(dir)
        .with_context(|| format!("cannot create or protect data dir {}", dir.display()))?;
    if let Some(mode) = old {
        tracing::info!(path = %dir.display(), old_mode = format!("{mode:o}"), "data dir made private (0700)");
    }
    Ok(())
}

/// Opens the store of `config`.
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    prepare_data_dir(&config.data_dir)?;
    let store = Store::open(&config.data_dir.join("store"), config.store_cache_bytes)
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    // Before anything else reads the store: the first start with pools puts
    // the users it already has into the built-in pool.
    store
        .ensure_default_pool(crate::clock::now_ms())
        .context("cannot set up the default pool")?;
    let indexed = store
        .index_unindexed_tokens()
        .context("cannot index the stored access tokens")?;
    if indexed > 0 {
        tracing::info!(indexed, "access tokens indexed for the token quotas");
    }
    // Deliveries queued by a controller from before the due index.
    store
        .ensure_delivery_index()
        .context("cannot index the webhook deliveries")?;
    Ok(store)
}

/// On the very first start, creates the admin client and writes its
/// credentials to a 0600 file (the log says where, never the secret).
fn bootstrap_admin(store: &Store, data_dir: &Path) -> anyhow::Result<()> {
    if store.has_admin_client()? {
        return Ok(());
    }
    let fixed = match (std::env::var(BOOTSTRAP_ID_VAR), std::env::var(BOOTSTRAP_SECRET_VAR)) {
        (Ok(id), Ok(secret)) if !id.is_empty() && secret.len() >= 16 => Some((id, secret)),
        (Ok(_), Ok(_)) => anyhow::bail!(
            "{BOOTSTRAP_ID_VAR} must not be empty and {BOOTSTRAP_SECRET_VAR} must be at least 16 characters"
        ),
        _ => None,
    };
    let from_env = fixed.is_some();
    let client = clients::create(store, "admin", true, fixed)?;
    let path = data_dir.join(ADMIN_CREDENTIALS_FILE);
    let file = CredentialsFile {
        client_id: client.client_id.clone(),
        client_secret: client.client_secret,
    };
    write_private(&path, &serde_json::to_vec_pretty(&file)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::warn!(
        client_id = %client.client_id,
        credentials_file = %path.display(),
        from_env,
        "created the admin client; its secret is in the credentials file"
    );
    Ok(())
}

/// A running controller.
pub struct Server {
    /// Where the REST API listens (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// Where the fleet endpoint listens.
    pub quic_addr: SocketAddr,
    /// `sha256:...` of the fleet CA.
    pub ca_fingerprint: String,
    /// Where its state lives.
    pub data_dir: PathBuf,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Opens the store, binds the listener and starts serving in the
    /// background.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let started = start_inner(config.clone(), async {
            let _ = rx.await;
        })
        .await?;
        Ok(Server {
            addr: started.addr,
            quic_addr: started.quic_addr,
            ca_fingerprint: started.ca_fingerprint,
            task: started.task,
            data_dir: config.data_dir,
            shutdown: tx,
        })
    }

    /// Stops accepting, finishes in-flight requests, flushes the store.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        self.task.await.context("server task failed")?
    }
}

struct Started {
    addr: SocketAddr,
    quic_addr: SocketAddr,
    ca_fingerprint: String,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_inner(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Started> {
    flotilla_common::tls::install_provider();
    let store = open_store(&config)?;
    bootstrap_admin(&store, &config.data_dir)?;
    crate::stacks::restart::abandon(&store)?;
    store.flush().await?;
    let pki =
        Pki::load_or_create(&config.data_dir.join("pki")).context("cannot set up the fleet CA")?;
    mark_sessions_lost(&store)?;
    let quic_config = crate::fleet::tls::server_config(
        &pki,
        config.fleet.keep_alive,
        config.fleet.idle_timeout,
        config.fleet.gso,
    )?;
    let endpoint = crate::fleet::listener::bind(config.quic_listen, quic_config)
        .with_context(|| format!("cannot listen for agents on {}", config.quic_listen))?;
    let quic_addr = endpoint.local_addr()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let rest_tls = crate::rest_tls::server_config(
        &config.rest_tls,
        &pki,
        &crate::rest_tls::self_names(addr, config.fleet.api_url.as_deref()),
    )?;
    let scheme = config.rest_tls.scheme();
    let ca_fingerprint = pki.ca_fingerprint.clone();
    let fleet =
        Arc::new(Fleet {
            store: store.clone(),
            pki,
            registry: Default::default(),
            settings: crate::fleet::FleetSettings {
                // Agents learn the API's URL from the address actually bound
                // (the configured one may say port 0), unless one was given.
                api_url: config.fleet.api_url.clone().or_else(|| {
                    (!addr.ip().is_unspecified()).then(|| format!("{scheme}://{addr}"))
                }),
                ..config.fleet.clone()
            },
            nudge: Arc::new(Notify::new()),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            unauthenticated: Default::default(),
            shed_log: crate::fleet::shed::ShedLog::new(crate::fleet::shed::WINDOW),
            stack_tokens: Default::default(),
        });
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        flotilla_common::systemd::stopping();
        tracing::info!("shutting down: finishing in-flight requests");
        stopping_tx.send_replace(true);
    };
    let state = AppState {
        store: store.clone(),
        settings: Arc::new(ApiSettings {
            body_limit: config.body_limit,
            token_ttl: config.token_ttl,
            max_container_section: config.max_container_section,
            webhook_allow_private: config.webhook_allow_private,
            quotas: config.quotas,
            body_timeout: config.http.body_timeout,
            restart_timeout: config.restart_timeout,
        }),
        fleet: fleet.clone(),
        stopping: stopping_rx,
        follows: Default::default(),
        rate_limits: Arc::new(crate::api::rate_limit::RateLimits::new(
            config.http.caller_rate,
            config.http.address_rate,
        )),
        lockouts: Arc::new(crate::auth::lockout::Lockouts::new(config.http.lockout)),
    };
    let sweeper = tokio::spawn(tracing::Instrument::instrument(
        crate::api::rate_limit::sweep(state.rate_limits.clone(), state.lockouts.clone()),
        tracing::info_span!("rate_limit_sweep"),
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut fleet_stop = stop_rx.clone();
    let fleet_task = tokio::spawn(crate::fleet::listener::serve(
        fleet.clone(),
        endpoint,
        async move {
            let _ = fleet_stop.wait_for(|stop| *stop).await;
        },
    ));
    let scheduler = tokio::spawn(crate::scheduler::run(fleet.clone()));
    let silence = tokio::spawn(crate::fleet::session::watch_silence(fleet.clone()));
    let housekeeping = tokio::spawn(housekeeping(store.clone(), config.event_retention));
    let webhooks = tokio::spawn(
        crate::hooks::run(
            store.clone(),
            fleet.metrics.clone(),
            crate::hooks::HookSettings::new(config.webhook_timeout, config.webhook_allow_private),
        )
        .instrument(tracing::info_span!("webhooks")),
    );
    let app = crate::api::router(state);
    tracing::info!(
        listen = %addr,
        scheme,
        quic_listen = %quic_addr,
        ca_fingerprint = %ca_fingerprint,
        data_dir = %config.data_dir.display(),
        "controller ready"
    );
    flotilla_common::systemd::ready(&format!("REST on {addr}, fleet on {quic_addr}"));
    let watchdog_store = store.clone();
    let watchdog = flotilla_common::systemd::spawn_watchdog(move || {
        let store = watchdog_store.clone();
        async move { store.size_on_disk().is_ok() }
    });
    let limits = config.http.clone();
    let task = tokio::spawn(async move {
        let served = crate::serve::serve(listener, app, rest_tls, &limits, shutdown).await;
        let _ = stop_tx.send(true);
        let _ = fleet_task.await;
        scheduler.abort();
        silence.abort();
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        housekeeping.abort();
        webhooks.abort();
        sweeper.abort();
        store.flush().await.context("final store flush failed")?;
        tracing::info!("controller stopped; store flushed");
        served.context("HTTP server failed")
    });
    Ok(Started {
        addr,
        quic_addr,
        ca_fingerprint,
        task,
    })
}

/// Runs the controller until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let started = start_inner(config, shutdown).await?;
    started.task.await.context("server task failed")?
}

/// After a restart no session is live: agents recorded as connected are
/// lost from now on (and keep their placements for the re-placement delay,
/// time enough to reconnect).
fn mark_sessions_lost(store: &Store) -> anyhow::Result<()> {
    let now = crate::clock::now_ms();
    for agent in store.agents()? {
        if agent.state == crate::store::AgentState::Connected {
            let mut agent = crate::store::AgentRecord::clone(&agent);
            agent.state = crate::store::AgentState::Lost;
            agent.state_since_ms = now;
            store.put_agent(&agent)?;
        }
    }
    Ok(())
}

/// Hourly removal of expired tokens, and of events, finished webhook
/// deliveries and finished tasks older than the retention (`None`: kept
/// forever).
async fn housekeeping(store: Store, retention: Option<std::time::Duration>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let now = crate::clock::now_ms();
        match store.purge_expired_tokens(now) {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "expired tokens purged"),
            Err(err) => tracing::error!(error = %err, "token purge failed"),
        }
        let Some(retention) = retention else { continue };
        let cutoff = now - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        match store
            .prune_events(cutoff)
            .and_then(|events| Ok((events, store.prune_deliveries(cutoff)?)))
            .and_then(|(events, deliveries)| Ok((events, deliveries, store.prune_tasks(cutoff)?)))
        {
            Ok((0, 0, 0)) => {}
            Ok((events, deliveries, tasks)) => {
                tracing::info!(
                    events,
                    deliveries,
                    tasks,
                    "old events, deliveries and tasks pruned"
                )
            }
            Err(err) => tracing::error!(error = %err, "event pruning failed"),
        }
    }
}
