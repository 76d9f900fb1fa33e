//! Hashing and constant-time comparison of secrets.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Length of generated client secrets (as in Mobingi's examples).
pub const CLIENT_SECRET_LEN: usize = 30;
/// Length of generated access tokens.
pub const ACCESS_TOKEN_LEN: usize = 48;
/// Length of a stack's `auth_token`.
pub const STACK_TOKEN_LEN: usize = 28;

/// Hex SHA-256 of a secret: what the store keeps instead of the secret.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` hashes to `expected_digest`, without leaking through
/// timing how much of it matched.
pub fn matches_digest(secret: &str, expected_digest: &str) -> bool {
    digest(secret)
        .as_bytes()
        .ct_eq(expected_digest.as_bytes())
        .into()
}

/// Constant-time equality of two plain secrets (stack auth tokens, which the
/// API must be able to show and so are kept as they are). Hashing first makes
/// the comparison independent of the lengths.
pub fn equal(presented: &str, stored: &str) -> bool {
    Sha256::digest(presented.as_bytes())
        .ct_eq(&Sha256::digest(stored.as_bytes()))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_verify_only_the_right_secret() {
        let stored = digest("s3cret");
        assert!(matches_digest("s3cret", &stored));
        assert!(!matches_digest("s3cret ", &stored));
        assert!(equal("abc", "abc"));
        assert!(!equal("abc", "abcd"));
    }
}
