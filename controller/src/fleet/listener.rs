//! The fleet endpoint: one UDP socket (with large buffers, for many agents),
//! every incoming connection routed by ALPN to enrollment or a session.

use super::{enroll, session, Fleet};
use flotilla_common::wire::{codes, ALPN_CONTROL, ALPN_ENROLL};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Socket buffer size asked of the kernel (it may grant less).
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;

/// Binds the fleet endpoint.
pub fn bind(addr: SocketAddr, config: quinn::ServerConfig) -> std::io::Result<quinn::Endpoint> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if let Err(err) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        tracing::warn!(error = %err, "cannot raise the UDP receive buffer");
    }
    if let Err(err) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        tracing::warn!(error = %err, "cannot raise the UDP send buffer");
    }
    socket.bind(&addr.into())?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket.into(),
        Arc::new(quinn::TokioRuntime),
    )
}

/// Accepts connections until `shutdown`, then closes every session and
/// waits (briefly) for the closes to be sent.
pub async fn serve(
    fleet: Arc<Fleet>,
    endpoint: quinn::Endpoint,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                tokio::spawn(route(fleet.clone(), incoming));
            }
            () = &mut shutdown => break,
        }
    }
    fleet
        .registry
        .close_all(codes::SHUTTING_DOWN, b"controller shutting down");
    endpoint.close(codes::SHUTTING_DOWN, b"controller shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}

async fn route(fleet: Arc<Fleet>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(err) => {
            tracing::warn!(%remote, error = %err, "fleet connection failed during the TLS handshake");
            return;
        }
    };
    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    match alpn.as_deref() {
        Some(ALPN_ENROLL) => enroll::handle(&fleet, connection).await,
        Some(ALPN_CONTROL) => session::run(fleet, connection).await,
        _ => {
            tracing::warn!(%remote, "fleet connection with an unknown protocol");
            connection.close(codes::PROTOCOL_ERROR, b"unknown ALPN");
        }
    }
}
