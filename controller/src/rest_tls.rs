//! HTTPS for the REST API: the operator's certificate files, or a
//! certificate the fleet CA issues (`--tls self`), which Flotilla's agents
//! verify with the CA they pinned at enrollment.

use crate::config::RestTls;
use crate::fleet::pki::Pki;
use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;

/// The names a self-issued certificate covers: the bound address (unless
/// a wildcard), the public URL's host, and loopback.
pub fn self_names(bound: SocketAddr, public_url: Option<&str>) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !bound.ip().is_unspecified() {
        names.push(bound.ip().to_string());
    }
    if let Some((host, _)) = public_url.and_then(crate::hook_targets::host_port) {
        names.push(host);
    }
    names
}

/// The rustls configuration for the REST API, or `None` for plain HTTP.
pub fn server_config(
    tls: &RestTls,
    pki: &Pki,
    names: &[String],
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let (chain, key): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) = match tls {
        RestTls::Off => return Ok(None),
        RestTls::SelfIssued => {
            let (cert, key) = pki
                .issue_rest(names)
                .context("cannot issue the REST API's certificate")?;
            (vec![cert], key)
        }
        RestTls::Files { cert, key } => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("cannot read the certificates in {}", cert.display()))?;
            anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert.display());
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("cannot read the private key in {}", key.display()))?;
            (chain, key)
        }
    };
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the REST API's certificate and key do not fit")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_urls() {
        for (url, host) in [
            (
                "https://controller.example:8443/",
                Some("controller.example"),
            ),
            ("http://10.0.0.5:8080", Some("10.0.0.5")),
            ("https://[fd00::1]:8443/x", Some("fd00::1")),
            ("https://api.example", Some("api.example")),
            ("nonsense", None),
        ] {
            let found = crate::hook_targets::host_port(url).map(|(h, _)| h);
            assert_eq!(found.as_deref(), host, "{url}");
        }
        let names = self_names(
            "0.0.0.0:8443".parse().expect("addr"),
            Some("https://api.example:8443"),
        );
        assert!(names.contains(&"api.example".to_owned()));
        assert!(!names.contains(&"0.0.0.0".to_owned()));
    }
}
