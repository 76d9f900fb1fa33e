//! TLS pieces both daemons share: the one crypto provider, certificate
//! fingerprints, and the transport settings of the fleet link.

use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// The crypto provider every TLS user in the process shares (ring: fastest
/// to build, and what quinn, rustls and rcgen are all built with here).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs [`provider`] as the process default. Harmless when called
/// again.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `sha256:<hex>` of a DER certificate: the form operators pin.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// Normalises a fingerprint given by an operator: accepts `sha256:` or
/// not, colons or not, any case.
pub fn normalize_fingerprint(text: &str) -> Option<String> {
    let hex: String = text
        .trim()
        .trim_start_matches("sha256:")
        .trim_start_matches("SHA256:")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| format!("sha256:{hex}"))
}

/// QUIC transport settings for the fleet link (both sides): keep-alives well
/// below the idle timeout, so NAT bindings stay open and a dead peer is
/// noticed. `gso` can be turned off for virtual NICs that reject UDP
/// segmentation offload.
pub fn transport(
    keep_alive: Duration,
    idle_timeout: Duration,
    gso: bool,
) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.enable_segmentation_offload(gso);
    transport.keep_alive_interval(Some(keep_alive));
    transport.max_idle_timeout(quinn::IdleTimeout::try_from(idle_timeout).ok());
    transport.max_concurrent_uni_streams(0u32.into());
    transport.max_concurrent_bidi_streams(16u32.into());
    transport
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_normalise() {
        let fp = fingerprint(b"abc");
        assert!(fp.starts_with("sha256:") && fp.len() == 7 + 64);
        let upper_colons: String = fp[7..]
            .to_ascii_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(
            normalize_fingerprint(&upper_colons).as_deref(),
            Some(fp.as_str())
        );
        assert_eq!(normalize_fingerprint("sha256:abc"), None);
    }
}
