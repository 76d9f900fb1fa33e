//! The agent's identity on disk: its private key (0600, generated here and
//! never sent anywhere), the certificate the controller signed, the CA
//! certificate, and what enrollment told it.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What enrollment established.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Enrollment {
    pub agent_id: String,
    pub instance_id: String,
    /// `host:port` of the controller's fleet endpoint.
    pub controller: String,
    pub ca_fingerprint: String,
}

/// A loaded identity.
pub struct Identity {
    pub enrollment: Enrollment,
    pub key: Vec<u8>,
    pub cert: Vec<u8>,
    pub ca: Vec<u8>,
}

/// Why the identity could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("this agent is not enrolled (no {0}); run `flotilla-agent enroll` first")]
    NotEnrolled(String),
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is damaged: {reason}")]
    Damaged { path: String, reason: String },
}

fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("identity")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub use flotilla_common::files::write_private;

/// Where the agent keeps the REST token the controller handed it in the
/// last welcome (0600, in the identity directory): the bearer of its REST
/// fallback, which speaks for this agent only.
pub fn rest_token_path(data_dir: &Path) -> PathBuf {
    dir(data_dir).join("rest-token")
}

impl Identity {
    /// Whether `data_dir` holds an identity.
    pub fn exists(data_dir: &Path) -> bool {
        dir(data_dir).join("enrollment.json").exists()
    }

    /// Saves a new identity (replacing any previous one).
    pub fn save(&self, data_dir: &Path) -> Result<(), IdentityError> {
        let dir = dir(data_dir);
        flotilla_common::files::private_dir(&dir).map_err(io(&dir))?;
        for (name, bytes) in [
            ("agent.key", &self.key),
            ("agent.crt", &self.cert),
            ("ca.crt", &self.ca),
        ] {
            let path = dir.join(name);
            write_private(&path, bytes).map_err(io(&path))?;
        }
        let path = dir.join("enrollment.json");
        let json =
            serde_json::to_vec_pretty(&self.enrollment).map_err(|err| IdentityError::Damaged {
                path: path.display().to_string(),
                reason: err.to_string(),
            })?;
        write_private(&path, &json).map_err(io(&path))
    }

    /// Loads the identity of `data_dir`.
    pub fn load(data_dir: &Path) -> Result<Identity, IdentityError> {
        let dir = dir(data_dir);
        let path = dir.join("enrollment.json");
        if !path.exists() {
            return Err(IdentityError::NotEnrolled(path.display().to_string()));
        }
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(io(&path))
        };
        let enrollment = serde_json::from_slice(&read("enrollment.json")?).map_err(|err| {
            IdentityError::Damaged {
                path: path.display().to_string(),
                reason: err.to_string(),
            }
        })?;
        Ok(Identity {
            enrollment,
            key: read("agent.key")?,
            cert: read("agent.crt")?,
            ca: read("ca.crt")?,
        })
    }

    /// The private key for TLS.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }

    /// The agent's certificate for TLS.
    pub fn certificate(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.cert.clone())
    }

    /// The CA certificate for TLS.
    pub fn ca_certificate(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.ca.clone())
    }
}
