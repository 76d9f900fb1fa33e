//! The REST listener: one accept loop for plain HTTP and HTTPS, on hyper's
//! HTTP/1.1 server with the limits slow clients need.
//!
//! - **Connections.** At most `max_connections` are served at once; the
//!   loop takes a permit before it accepts, so further connections wait in
//!   the kernel's listen backlog (their TCP handshake completes, nothing is
//!   read) until one ends, rather than being dropped.
//! - **Headers and idle keep-alive.** hyper's `header_read_timeout` starts
//!   whenever a connection waits for a request head, the first one or the
//!   next one on a kept-alive connection, so it bounds both a client stuck
//!   in its headers and an idle connection. The TLS handshake gets the same
//!   bound.
//! - **Bodies** are bounded by the API's body timeout where handlers read
//!   them ([`crate::api::extract::BodyTimeout`]).
//! - **Shutdown** stops accepting, lets every connection finish the request
//!   it is in and closes idle ones (hyper-util's `GracefulShutdown`).

use crate::api::limits::HttpLimits;
use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

/// Pause after a failed accept (out of file descriptors, say), so the loop
/// does not spin while the cause lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What every connection is served with.
#[derive(Clone)]
struct Conn {
    /// Makes each connection's service, with the peer's address as the
    /// request extension `ConnectInfo<SocketAddr>`.
    app: IntoMakeServiceWithConnectInfo<Router, SocketAddr>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    http: hyper::server::conn::http1::Builder,
    header_timeout: Duration,
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until
/// `shutdown`, then drains the open connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: &HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let conn = Conn {
        app: app.into_make_service_with_connect_info::<SocketAddr>(),
        tls: tls.map(tokio_rustls::TlsAcceptor::from),
        http,
        header_timeout: limits.header_timeout,
    };
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let span = tracing::debug_span!("connection", %peer);
        tokio::spawn(
            conn.clone()
                .serve(stream, peer, permit, graceful.watcher())
                .instrument(span),
        );
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "REST listener closed; finishing open requests"
    );
    graceful.shutdown().await;
    Ok(())
}

impl Conn {
    /// One connection, holding its permit until it closes.
    async fn serve(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        _permit: OwnedSemaphorePermit,
        watcher: Watcher,
    ) {
        let _ = stream.set_nodelay(true);
        let service = match tower::ServiceExt::oneshot(self.app, peer).await {
            Ok(service) => TowerToHyperService::new(service),
            Err(never) => match never {},
        };
        let served = match self.tls {
            None => {
                let conn = self.http.serve_connection(TokioIo::new(stream), service);
                watcher.watch(conn).await
            }
            Some(acceptor) => {
                let tls = match tokio::time::timeout(self.header_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!(error = %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        return;
                    }
                };
                let conn = self.http.serve_connection(TokioIo::new(tls), service);
                watcher.watch(conn).await
            }
        };
        if let Err(err) = served {
            tracing::debug!(error = %err, "connection ended with an error");
        }
    }
}
