//! Client TLS for the fleet link, and for the REST fallback over HTTPS.
//!
//! Enrollment trusts the controller by the CA fingerprint the operator
//! pinned (or a CA file): the controller sends its CA with its certificate,
//! the agent picks the CA whose SHA-256 matches the pin and verifies the
//! controller's certificate against it. After enrollment, the saved CA is
//! the only root, and the agent presents its own certificate.

use crate::identity::Identity;
use flotilla_common::wire::{ALPN_CONTROL, ALPN_ENROLL};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;

/// How the agent recognises the controller at enrollment.
#[derive(Debug, Clone)]
pub enum Trust {
    /// `sha256:...` of the CA certificate.
    Fingerprint(String),
    /// The CA certificate itself (DER).
    CaCert(Vec<u8>),
}

/// Verifies the server against the CA in its chain whose fingerprint is
/// pinned.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|cert| flotilla_common::tls::fingerprint(cert) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the controller's CA does not match the pinned fingerprint {}",
                    self.fingerprint
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|err| rustls::Error::General(err.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Why a client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("QUIC crypto configuration failed: {0}")]
    Quic(String),
}

fn finish(
    mut crypto: rustls::ClientConfig,
    alpn: &[u8],
    transport: quinn::TransportConfig,
) -> Result<quinn::ClientConfig, TlsError> {
    crypto.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|err| TlsError::Quic(err.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Client configuration for enrollment (server authentication only).
pub fn enroll_config(trust: &Trust) -> Result<quinn::ClientConfig, TlsError> {
    let provider = flotilla_common::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let crypto = match trust {
        Trust::Fingerprint(fingerprint) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCa {
                fingerprint: fingerprint.clone(),
                provider,
            }))
            .with_no_client_auth(),
        Trust::CaCert(der) => {
            let mut roots = RootCertStore::empty();
            roots.add(CertificateDer::from(der.clone()))?;
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    let transport =
        flotilla_common::tls::transport(Duration::from_secs(5), Duration::from_secs(30), true);
    finish(crypto, ALPN_ENROLL, transport)
}

/// Client configuration for the control connection (mutual TLS).
pub fn control_config(
    identity: &Identity,
    keep_alive: Duration,
    idle_timeout: Duration,
    gso: bool,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(identity.ca_certificate())?;
    let crypto = rustls::ClientConfig::builder_with_provider(flotilla_common::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![identity.certificate()], identity.private_key())?;
    finish(
        crypto,
        ALPN_CONTROL,
        flotilla_common::tls::transport(keep_alive, idle_timeout, gso),
    )
}

/// TLS for the REST fallback when the controller serves HTTPS: the fleet
/// CA the agent pinned at enrollment (what `--tls self` issues from) and
/// the system's roots (an operator's own certificate).
pub fn rest_client_config(fleet_ca: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    if let Err(err) = roots.add(fleet_ca) {
        tracing::warn!(error = %err, "the fleet CA is not usable as a REST root");
    }
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(system_roots = added, "REST fallback roots loaded");
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}
