//! Delivery signatures, as `X-Flotilla-Signature-256:
//! t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`. The time is
//! signed with the body, so a receiver that refuses old times refuses a
//! captured delivery replayed later; each attempt is signed afresh.

use hmac::{Hmac, Mac};
use std::time::Duration;

/// The header carrying the signature.
pub const HEADER: &str = "X-Flotilla-Signature-256";

/// Why a signature header does not vouch for a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Not `t=<digits>,v1=<hex>`.
    #[error("the signature header is malformed")]
    Malformed,
    /// No `v1` matches the body under the secret.
    #[error("the signature does not match")]
    Mismatch,
    /// The signed time is further from now than the tolerance.
    #[error("the signature's time is outside the tolerance")]
    Stale,
}

/// `None` never happens (HMAC takes keys of any length).
fn mac(secret: &str, timestamp: u64, body: &[u8]) -> Option<Hmac<sha2::Sha256>> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The header value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body)
        .map(|mac| hex::encode(mac.finalize().into_bytes()))
        .unwrap_or_default();
    format!("t={timestamp},v1={digest}")
}

/// Checks a header the way a receiver should: a `v1` matching the body
/// (compared in constant time), signed within `tolerance` of `now_secs`.
/// Returns the signed time.
pub fn verify(
    header: &str,
    secret: &str,
    body: &[u8],
    now_secs: u64,
    tolerance: Duration,
) -> Result<u64, Invalid> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
                timestamp = Some(t.parse::<u64>().map_err(|_| Invalid::Malformed)?);
            }
            Some(("v1", hex)) => {
                signatures.push(hex::decode(hex).map_err(|_| Invalid::Malformed)?);
            }
            // Other schemes may be added later; they are ignored.
            Some((_, _)) => {}
            None => return Err(Invalid::Malformed),
        }
    }
    let timestamp = timestamp.ok_or(Invalid::Malformed)?;
    if signatures.is_empty() {
        return Err(Invalid::Malformed);
    }
    let matches = signatures
        .iter()
        .any(|sig| mac(secret, timestamp, body).is_some_and(|mac| mac.verify_slice(sig).is_ok()));
    if !matches {
        return Err(Invalid::Mismatch);
    }
    if now_secs.abs_diff(timestamp) > tolerance.as_secs() {
        return Err(Invalid::Stale);
    }
    Ok(timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    #[test]
    fn signatures_are_hmac_sha256_of_time_dot_body() {
        // RFC 4231 test case 2, with the message "1.what do ya want...".
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").expect("key");
        mac.update(b"1700000000.what do ya want for nothing?");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(
            sign("Jefe", 1_700_000_000, b"what do ya want for nothing?"),
            format!("t=1700000000,v1={expected}")
        );
    }

    #[test]
    fn verification_table() {
        let body = br#"{"id":7}"#;
        let good = sign("secret", 1_000, body);
        let v1 = good.split_once(",v1=").map(|(_, v)| v).unwrap_or_default();
        // (header, secret, body, now, outcome)
        type Case<'a> = (String, &'a str, &'a [u8], u64, Result<u64, Invalid>);
        let cases: Vec<Case> = vec![
            (good.clone(), "secret", body, 1_000, Ok(1_000)),
            (good.clone(), "secret", body, 1_300, Ok(1_000)),
            (good.clone(), "secret", body, 1_301, Err(Invalid::Stale)),
            (good.clone(), "secret", body, 699, Err(Invalid::Stale)),
            (good.clone(), "other", body, 1_000, Err(Invalid::Mismatch)),
            (good.clone(), "secret", b"{}", 1_000, Err(Invalid::Mismatch)),
            // The time is signed: moving it forward breaks the signature.
            (
                format!("t=1200,v1={v1}"),
                "secret",
                body,
                1_200,
                Err(Invalid::Mismatch),
            ),
            (format!("v1={v1},t=1000"), "secret", body, 1_000, Ok(1_000)),
            (
                format!("t=1000,v0=ab,v1={v1}"),
                "secret",
                body,
                1_000,
                Ok(1_000),
            ),
            (
                format!("t=1000,v1=00,v1={v1}"),
                "secret",
                body,
                1_000,
                Ok(1_000),
            ),
            (
                format!("v1={v1}"),
                "secret",
                body,
                1_000,
                Err(Invalid::Malformed),
            ),
            (
                "t=1000".into(),
                "secret",
                body,
                1_000,
                Err(Invalid::Malformed),
            ),
            (
                "t=1000,v1=zz".into(),
                "secret",
                body,
                1_000,
                Err(Invalid::Malformed),
            ),
            (
                "t=-1,v1=00".into(),
                "secret",
                body,
                1_000,
                Err(Invalid::Malformed),
            ),
            (
                format!("sha256={v1}"),
                "secret",
                body,
                1_000,
                Err(Invalid::Malformed),
            ),
            ("".into(), "secret", body, 1_000, Err(Invalid::Malformed)),
        ];
        for (header, secret, body, now, expected) in cases {
            assert_eq!(
                verify(&header, secret, body, now, FIVE_MINUTES),
                expected,
                "{header} at {now}"
            );
        }
    }
}
