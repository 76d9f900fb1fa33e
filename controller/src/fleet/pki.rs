//! The controller's private certificate authority: created on first start,
//! it signs the controller's server certificate and every agent's client
//! certificate. Keys are written 0600 in `<data dir>/pki/`.

use crate::server::write_private;
use flotilla_common::wire::CONTROLLER_NAME;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// Why the CA could not be loaded or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate operation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the certificate signing request is invalid: {0}")]
    BadCsr(String),
}

/// The CA, loaded and ready to sign, with the server identity it issued.
pub struct Pki {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (DER).
    pub ca_der: CertificateDer<'static>,
    /// `sha256:...` of the CA certificate: what agents pin.
    pub ca_fingerprint: String,
    /// The controller's server certificate (DER).
    pub server_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn validity(params: &mut CertificateParams, years: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(365 * years);
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Flotilla");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn pem_der(pem_text: &str) -> Result<Vec<u8>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem_text.as_bytes())
        .map(|der| der.to_vec())
        .map_err(|err| PkiError::BadCsr(format!("bad PEM: {err}")))
}

impl Pki {
    /// Loads the CA and server certificate from `dir`, creating them on
    /// first start.
    pub fn load_or_create(dir: &Path) -> Result<Pki, PkiError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let ca_path = dir.join("ca.pem");
        let ca_key_path = dir.join("ca-key.pem");
        let server_path = dir.join("server.pem");
        let server_key_path = dir.join("server-key.pem");
        if !ca_path.exists() || !ca_key_path.exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            params.distinguished_name = name("Flotilla fleet CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            validity(&mut params, 20);
            let cert = params.self_signed(&key)?;
            write_private(&ca_key_path, key.serialize_pem().as_bytes())
                .map_err(io(&ca_key_path))?;
            std::fs::write(&ca_path, cert.pem()).map_err(io(&ca_path))?;
            // A new CA invalidates any old server certificate.
            let _ = std::fs::remove_file(&server_path);
            tracing::info!(path = %ca_path.display(), "fleet CA created");
        }
        let ca_pem = std::fs::read_to_string(&ca_path).map_err(io(&ca_path))?;
        let ca_key =
            KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
        let ca_der = CertificateDer::from(pem_der(&ca_pem)?);

        if !server_path.exists() || !server_key_path.exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(vec![CONTROLLER_NAME.to_owned()])?;
            params.distinguished_name = name(CONTROLLER_NAME);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            validity(&mut params, 10);
            let cert = params.signed_by(&key, &issuer)?;
            write_private(&server_key_path, key.serialize_pem().as_bytes())
                .map_err(io(&server_key_path))?;
            std::fs::write(&server_path, cert.pem()).map_err(io(&server_path))?;
        }
        let server_der = CertificateDer::from(pem_der(
            &std::fs::read_to_string(&server_path).map_err(io(&server_path))?,
        )?);
        let server_key = KeyPair::from_pem(
            &std::fs::read_to_string(&server_key_path).map_err(io(&server_key_path))?,
        )?;
        Ok(Pki {
            ca_fingerprint: flotilla_common::tls::fingerprint(&ca_der),
            issuer,
            ca_der,
            server_der,
            server_key_der: server_key.serialize_der(),
        })
    }

    /// The server's private key, for the TLS config.
    pub fn server_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()))
    }

    /// Issues a serving certificate for the REST API (`--tls self`), valid
    /// for `names` (host names and IP addresses) and the controller's fleet
    /// name. Made anew at each start and kept in memory only.
    pub fn issue_rest(
        &self,
        names: &[String],
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), PkiError> {
        let key = KeyPair::generate()?;
        let mut sans: Vec<String> = vec![CONTROLLER_NAME.to_owned()];
        sans.extend(names.iter().filter(|n| !n.is_empty()).cloned());
        sans.sort();
        sans.dedup();
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = name("Flotilla REST API");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, 1);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ))
    }

    /// Signs an agent's CSR. Only the public key is taken from the request:
    /// the name, usages and validity are the controller's, so an agent
    /// cannot ask for more than a client certificate for its own id.
    pub fn sign_agent(
        &self,
        agent_id: &str,
        csr_der: &[u8],
    ) -> Result<CertificateDer<'static>, PkiError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|err| PkiError::BadCsr(err.to_string()))?;
        let mut params = CertificateParams::new(vec![format!("{agent_id}.agents.flotilla")])?;
        params.distinguished_name = name(agent_id);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, 10);
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(cert.der().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_persists_and_signs_agent_requests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::load_or_create(dir.path()).expect("create");
        let again = Pki::load_or_create(dir.path()).expect("load");
        assert_eq!(pki.ca_fingerprint, again.ca_fingerprint);
        assert_eq!(pki.server_der, again.server_der);
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca-key.pem", "server-key.pem"] {
            let mode = std::fs::metadata(dir.path().join(key))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let agent_key = KeyPair::generate().expect("key");
        let csr = CertificateParams::default()
            .serialize_request(&agent_key)
            .expect("csr");
        let cert = pki.sign_agent("ag-1", csr.der()).expect("signed");
        assert!(!cert.is_empty());
        assert!(matches!(
            pki.sign_agent("ag-1", b"garbage"),
            Err(PkiError::BadCsr(_))
        ));
    }
}
