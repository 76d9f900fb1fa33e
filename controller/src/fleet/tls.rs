//! TLS configuration of the controller's QUIC endpoint.
//!
//! Client certificates are optional at the TLS layer (enrollment connections
//! have none yet) but, when present, must chain to the fleet CA; the session
//! then refuses control connections without one. Both ALPNs are offered.

use super::pki::Pki;
use flotilla_common::wire::{ALPN_CONTROL, ALPN_ENROLL};
use std::sync::Arc;
use std::time::Duration;

/// Connection attempts quinn may hold before the accept loop decides on
/// them (it decides at once; past this, attempts are refused by quinn).
const MAX_INCOMING: usize = 4096;
/// Bytes buffered per attempt before that decision, and for all of them.
const INCOMING_BUFFER: u64 = 64 * 1024;
const INCOMING_BUFFER_TOTAL: u64 = 16 * 1024 * 1024;

/// Why the server TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier could not be built: {0}")]
    Verifier(String),
    #[error("QUIC crypto configuration failed: {0}")]
    Quic(String),
}

/// The quinn server configuration for the fleet endpoint.
pub fn server_config(
    pki: &Pki,
    keep_alive: Duration,
    idle_timeout: Duration,
    gso: bool,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = flotilla_common::tls::provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|err| TlsError::Verifier(err.to_string()))?;
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![pki.server_der.clone(), pki.ca_der.clone()],
            pki.server_key(),
        )?;
    crypto.alpn_protocols = vec![ALPN_CONTROL.to_vec(), ALPN_ENROLL.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
        .map_err(|err| TlsError::Quic(err.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(flotilla_common::tls::transport(
        keep_alive,
        idle_timeout,
        gso,
    )));
    config
        .max_incoming(MAX_INCOMING)
        .incoming_buffer_size(INCOMING_BUFFER)
        .incoming_buffer_size_total(INCOMING_BUFFER_TOTAL);
    Ok(config)
}
