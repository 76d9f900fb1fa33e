//! First contact with the controller: prove the join token, send a CSR for
//! a key made here, keep the certificate that comes back.

use crate::identity::{Enrollment, Identity};
use crate::tls::{self, Trust};
use flotilla_common::wire::messages::{EnrollRequest, EnrollResponse};
use flotilla_common::wire::{codes, frame, handshake, CONTROLLER_NAME, PROTOCOL_VERSION};
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(15);

/// What enrollment needs.
pub struct EnrollOptions<'a> {
    pub controller: &'a str,
    pub join_token: &'a str,
    pub trust: Trust,
    pub instance_id: &'a str,
    pub hostname: &'a str,
}

/// Why enrollment failed, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("cannot resolve the controller address {0}")]
    Resolve(String),
    #[error("cannot reach the controller at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("the controller refused the enrollment: {0}")]
    Refused(String),
    #[error("the controller sent its CA {got}, not the pinned {pinned}")]
    CaMismatch { got: String, pinned: String },
    #[error("enrollment protocol error: {0}")]
    Protocol(String),
    #[error("cannot create the agent key: {0}")]
    Key(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error("cannot open a UDP socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// Resolves `host:port` to one socket address.
pub async fn resolve(controller: &str) -> Result<std::net::SocketAddr, EnrollError> {
    tokio::net::lookup_host(controller)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| EnrollError::Resolve(controller.to_owned()))
}

/// A client endpoint on an ephemeral port of the right address family.
pub fn client_endpoint(remote: std::net::SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let local: std::net::SocketAddr = if remote.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    quinn::Endpoint::client(local)
}

/// Turns a connection failure into a sentence.
pub fn describe_connection_error(err: &quinn::ConnectionError) -> String {
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => format!(
            "{} ({})",
            codes::describe(close.error_code),
            String::from_utf8_lossy(&close.reason)
        ),
        quinn::ConnectionError::TransportError(err) => format!("TLS/transport failure: {err}"),
        quinn::ConnectionError::ConnectionClosed(close) => {
            format!("the controller closed the connection: {close}")
        }
        quinn::ConnectionError::TimedOut => {
            "timed out (is the controller's QUIC port reachable over UDP?)".into()
        }
        other => other.to_string(),
    }
}

/// Enrolls and saves the identity in `data_dir`.
pub async fn enroll(
    options: EnrollOptions<'_>,
    data_dir: &Path,
) -> Result<Enrollment, EnrollError> {
    let addr = resolve(options.controller).await?;
    let endpoint = client_endpoint(addr)?;
    let identity = request(&endpoint, addr, &options).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    let identity = identity?;
    identity.save(data_dir)?;
    Ok(identity.enrollment)
}

/// Enrolls over `endpoint` and returns the identity without saving it
/// (fleet simulations enroll thousands of identities this way).
pub async fn request(
    endpoint: &quinn::Endpoint,
    addr: std::net::SocketAddr,
    options: &EnrollOptions<'_>,
) -> Result<Identity, EnrollError> {
    let config = tls::enroll_config(&options.trust)?;
    let connect_err = |reason: String| EnrollError::Connect {
        addr: addr.to_string(),
        reason,
    };
    let connecting = endpoint
        .connect_with(config, addr, CONTROLLER_NAME)
        .map_err(|err| connect_err(err.to_string()))?;
    let connection = tokio::time::timeout(TIMEOUT, connecting)
        .await
        .map_err(|_| {
            connect_err("timed out (is the controller's QUIC port reachable over UDP?)".into())
        })?
        .map_err(|err| connect_err(describe_connection_error(&err)))?;
    let result = exchange(&connection, options).await;
    connection.close(codes::CLOSED, b"done");
    let (key, response) = result?;
    match response {
        EnrollResponse::Accepted {
            agent_id,
            instance_id,
            cert_der,
            ca_der,
        } => {
            let ca_fingerprint = flotilla_common::tls::fingerprint(&ca_der);
            if let Trust::Fingerprint(pinned) = &options.trust {
                if &ca_fingerprint != pinned {
                    return Err(EnrollError::CaMismatch {
                        got: ca_fingerprint,
                        pinned: pinned.clone(),
                    });
                }
            }
            Ok(Identity {
                enrollment: Enrollment {
                    agent_id,
                    instance_id,
                    controller: options.controller.to_owned(),
                    ca_fingerprint,
                },
                key,
                cert: cert_der,
                ca: ca_der,
            })
        }
        EnrollResponse::Refused { reason } => Err(EnrollError::Refused(reason)),
    }
}

/// Sends the request and reads the answer; returns the new private key
/// (PKCS#8 DER) with it.
async fn exchange(
    connection: &quinn::Connection,
    options: &EnrollOptions<'_>,
) -> Result<(Vec<u8>, EnrollResponse), EnrollError> {
    let protocol = |err: String| EnrollError::Protocol(err);
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|err| protocol(describe_connection_error(&err)))?;
    handshake::send(&mut send, PROTOCOL_VERSION)
        .await
        .map_err(|err| protocol(err.to_string()))?;
    let key = rcgen::KeyPair::generate().map_err(|err| EnrollError::Key(err.to_string()))?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .map_err(|err| EnrollError::Key(err.to_string()))?;
    let request = EnrollRequest {
        join_token: options.join_token.to_owned(),
        csr_der: csr.der().to_vec(),
        instance_id: options.instance_id.to_owned(),
        hostname: options.hostname.to_owned(),
    };
    frame::write(&mut send, &request, 64 * 1024)
        .await
        .map_err(|err| protocol(err.to_string()))?;
    let _ = send.finish();
    tokio::time::timeout(TIMEOUT, handshake::receive(&mut recv, PROTOCOL_VERSION))
        .await
        .map_err(|_| protocol("no handshake from the controller".into()))?
        .map_err(|err| protocol(err.to_string()))?;
    let response = tokio::time::timeout(
        TIMEOUT,
        frame::read::<_, EnrollResponse>(&mut recv, 64 * 1024),
    )
    .await
    .map_err(|_| protocol("no answer from the controller".into()))?;
    match response {
        Ok(Some(response)) => Ok((key.serialize_der(), response)),
        Ok(None) => Err(match connection.close_reason() {
            Some(reason) => EnrollError::Refused(describe_connection_error(&reason)),
            None => protocol("the controller closed the stream without an answer".into()),
        }),
        Err(err) => Err(match connection.close_reason() {
            Some(reason) => EnrollError::Refused(describe_connection_error(&reason)),
            None => protocol(err.to_string()),
        }),
    }
}
