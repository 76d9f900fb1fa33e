//! Hostile fleet and REST clients, for the QUIC limits' tests and the
//! hostile benchmark: peers that open connections and then stall, at each
//! step the controller has to bound.

use anyhow::Context;
use flotilla_agent::tls::Trust;
use flotilla_common::wire::CONTROLLER_NAME;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where a stalled QUIC client stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// TLS done on the enrollment ALPN, and nothing more (no stream).
    AfterTls,
    /// A stream with one byte of the `FLOT` preamble, then nothing.
    OnePreambleByte,
}

/// The enrollment client configuration pinned to the controller's CA.
pub fn enroll_config(ca_fingerprint: &str) -> anyhow::Result<quinn::ClientConfig> {
    flotilla_common::tls::install_provider();
    Ok(flotilla_agent::tls::enroll_config(&Trust::Fingerprint(
        ca_fingerprint.to_owned(),
    ))?)
}

/// A stalled connection, and the stream it keeps open (dropping it would
/// end the stream, which the controller answers at once).
pub struct Stalled {
    pub connection: quinn::Connection,
    /// When the TLS handshake was done.
    pub opened: Instant,
    _send: Option<quinn::SendStream>,
}

impl Stalled {
    /// Connects (answering a Retry if asked, as any quinn client does) and
    /// stalls at `stall`.
    pub async fn open(
        endpoint: &quinn::Endpoint,
        target: SocketAddr,
        config: quinn::ClientConfig,
        stall: Stall,
    ) -> anyhow::Result<Stalled> {
        let connection = endpoint
            .connect_with(config, target, CONTROLLER_NAME)?
            .await?;
        let opened = Instant::now();
        let send = match stall {
            Stall::AfterTls => None,
            Stall::OnePreambleByte => {
                let (mut send, _recv) = connection.open_bi().await?;
                send.write_all(b"F").await?;
                Some(send)
            }
        };
        Ok(Stalled {
            connection,
            opened,
            _send: send,
        })
    }

    /// Waits until the controller closes the connection: how long after
    /// the handshake, and how.
    pub async fn shed(&self) -> (Duration, quinn::ConnectionError) {
        let error = self.connection.closed().await;
        (self.opened.elapsed(), error)
    }
}

/// Opens `count` stalled connections, the stalls taking turns, `per_endpoint`
/// per client socket, at most `concurrency` handshakes at a time.
pub async fn open_stalled(
    target: SocketAddr,
    ca_fingerprint: &str,
    count: usize,
    stalls: &[Stall],
    concurrency: usize,
) -> anyhow::Result<(Vec<quinn::Endpoint>, Vec<Stalled>)> {
    const PER_ENDPOINT: usize = 250;
    let config = enroll_config(ca_fingerprint)?;
    let endpoints = (0..count.div_ceil(PER_ENDPOINT))
        .map(|_| quinn::Endpoint::client("127.0.0.1:0".parse()?).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let endpoint = endpoints[i / PER_ENDPOINT].clone();
        let (config, gate) = (config.clone(), gate.clone());
        let stall = stalls[i % stalls.len().max(1)];
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            Stalled::open(&endpoint, target, config, stall).await
        });
    }
    let mut stalled = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        stalled.push(joined.context("a stalling client panicked")??);
    }
    Ok((endpoints, stalled))
}

/// Clients that send the first packet of a handshake (a QUIC Initial with
/// the TLS ClientHello) and never another, nor read the answer: the
/// controller's side of the TLS handshake never finishes. Built on
/// quinn-proto directly, which hands over the datagram without a driver.
pub struct RawInitials {
    _socket: std::net::UdpSocket,
    _endpoint: quinn_proto::Endpoint,
    _connections: Vec<quinn_proto::Connection>,
}

impl RawInitials {
    /// Sends `count` Initials to `target`, each from a new connection.
    pub fn send(target: SocketAddr, ca_fingerprint: &str, count: usize) -> anyhow::Result<Self> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let mut endpoint = quinn_proto::Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            None,
            false,
            None,
        );
        // They ask for a long idle timeout, so the controller's deadline,
        // not the idle timer, is what ends them.
        let mut config = enroll_config(ca_fingerprint)?;
        let mut transport = quinn::TransportConfig::default();
        transport.max_idle_timeout(quinn::IdleTimeout::try_from(Duration::from_secs(600)).ok());
        config.transport_config(Arc::new(transport));
        let mut connections = Vec::with_capacity(count);
        let mut buffer = Vec::new();
        for _ in 0..count {
            let now = Instant::now();
            let (_, mut connection) =
                endpoint.connect(now, config.clone(), target, CONTROLLER_NAME)?;
            buffer.clear();
            let transmit = connection
                .poll_transmit(now, 1, &mut buffer)
                .context("a new connection has an Initial to send")?;
            socket.send_to(&buffer[..transmit.size], target)?;
            connections.push(connection);
        }
        Ok(RawInitials {
            _socket: socket,
            _endpoint: endpoint,
            _connections: connections,
        })
    }
}

/// A TCP connection to the REST port that sends nothing (or the start of
/// a request header) and waits.
pub async fn idle_http(
    addr: SocketAddr,
    partial_header: bool,
) -> anyhow::Result<tokio::net::TcpStream> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    if partial_header {
        stream
            .write_all(b"GET /v3/alm/stack HTTP/1.1\r\nHost: flotilla\r\n")
            .await?;
    }
    Ok(stream)
}

/// Waits until the server closes `stream` (end of stream or a reset);
/// anything it sends first (an error response) is read and dropped.
pub async fn closed_by_server(mut stream: tokio::net::TcpStream) {
    let mut buffer = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buffer).await {
        if n == 0 {
            break;
        }
    }
}
