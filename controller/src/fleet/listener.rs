//! The fleet endpoint: one UDP socket (with large buffers, for many agents).
//! Every connection attempt is admitted, asked to Retry or refused
//! ([`admission::decide`]) before any handshake work; an admitted one must
//! finish TLS, the preamble and its hello or enrollment request by a
//! deadline, and is routed by ALPN to enrollment or a session.

use super::admission::{self, Decision};
use super::pending::Pending;
use super::shed::Shed;
use super::{enroll, session, Fleet};
use crate::metrics::OutcomeLabels;
use flotilla_common::wire::{codes, ALPN_CONTROL, ALPN_ENROLL};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Binds the fleet endpoint.
pub fn bind(addr: SocketAddr, config: quinn::ServerConfig) -> std::io::Result<quinn::Endpoint> {
    flotilla_common::wire::endpoint::bind(addr, Some(config))
}

/// Accepts connections until `shutdown`, then closes every session and
/// waits (briefly) for the closes to be sent.
pub async fn serve(
    fleet: Arc<Fleet>,
    endpoint: quinn::Endpoint,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut summaries = tokio::time::interval(fleet.shed_log.window());
    summaries.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                admit(&fleet, incoming);
            }
            _ = summaries.tick() => fleet.shed_log.flush(),
            () = &mut shutdown => break,
        }
    }
    fleet
        .registry
        .close_all(codes::SHUTTING_DOWN, b"controller shutting down");
    endpoint.close(codes::SHUTTING_DOWN, b"controller shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}

/// Admits, retries or refuses one attempt. Runs on the accept loop, so the
/// count it reads only falls before the admitted one is added.
fn admit(fleet: &Arc<Fleet>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let decision = admission::decide(
        fleet.unauthenticated.count(),
        incoming.remote_address_validated(),
        &fleet.settings.admission,
    );
    fleet
        .metrics
        .fleet_admissions
        .get_or_create(&OutcomeLabels {
            outcome: decision.name().into(),
        })
        .inc();
    match decision {
        Decision::Admit => {
            let deadline = tokio::time::Instant::now() + fleet.settings.handshake_timeout;
            let pending = fleet.unauthenticated.enter(deadline);
            let span = tracing::info_span!("fleet_connection", %remote);
            tokio::spawn(route(fleet.clone(), incoming, pending).instrument(span));
        }
        Decision::Retry => {
            // An unvalidated address may always be asked to retry; if
            // quinn disagrees, the attempt is refused rather than admitted.
            if let Err(err) = incoming.retry() {
                err.into_incoming().refuse();
            }
        }
        Decision::Refuse => {
            fleet.shed(Shed::CapRefused, remote);
            incoming.refuse();
        }
    }
}

async fn route(fleet: Arc<Fleet>, incoming: quinn::Incoming, pending: Pending) {
    let remote = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(err) => {
            tracing::debug!(error = %err, "fleet connection attempt not accepted");
            return;
        }
    };
    // Dropping an unfinished handshake closes it.
    let connection = match tokio::time::timeout_at(pending.deadline(), connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(err)) => {
            fleet.shed_because(Shed::TlsFailed, remote, Some(&err.to_string()));
            return;
        }
        Err(_) => {
            fleet.shed(Shed::TlsTimeout, remote);
            return;
        }
    };
    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    match alpn.as_deref() {
        Some(ALPN_ENROLL) => enroll::handle(&fleet, connection, pending).await,
        Some(ALPN_CONTROL) => session::run(fleet, connection, pending).await,
        _ => {
            tracing::warn!("fleet connection with an unknown protocol");
            connection.close(codes::PROTOCOL_ERROR, b"unknown ALPN");
        }
    }
}
