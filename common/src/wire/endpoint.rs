//! A QUIC endpoint on a UDP socket with large buffers: one socket that
//! carries many peers' traffic (the controller's, or a benchmark's shared
//! client socket) overflows the kernel's default buffer when a burst
//! arrives, and every dropped datagram costs a retransmission timeout.

use std::net::SocketAddr;
use std::sync::Arc;

/// Socket buffer size asked of the kernel (it may grant less).
pub const SOCKET_BUFFER: usize = 8 * 1024 * 1024;

/// Binds an endpoint at `addr` with [`SOCKET_BUFFER`]-sized buffers (a
/// kernel that grants less is logged, not refused); a server when
/// `server` is given, else a client only.
pub fn bind(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
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
        server,
        socket.into(),
        Arc::new(quinn::TokioRuntime),
    )
}
