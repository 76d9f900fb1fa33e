//! Random identifiers in the shapes the Mobingi ALM API uses.
//!
//! Operators and scripts written against Mobingi parse these ids (for instance
//! `mo-<user>-<random>-tk` for templates), so the shapes are kept exactly.

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;

/// Letters and digits, `len` long, from the thread's CSPRNG.
///
/// Used for every secret the controller mints (client secrets, access tokens,
/// stack auth tokens), so it must come from a cryptographically secure source:
/// `rand::rng()` is ChaCha-based and seeded from the OS.
pub fn random_alphanumeric(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// A user id: 13 lowercase hex digits, like Mobingi's `5447820c870e1`.
pub fn user_id() -> String {
    let mut rng = rand::rng();
    (0..13)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
        .collect()
}

/// A template (and stack) id: `mo-<user_id>-<9 random>-tk`.
pub fn template_id(user_id: &str) -> String {
    format!("mo-{user_id}-{}-tk", random_alphanumeric(9))
}

/// A template version id: 32 characters of letters, digits and `.`, like S3
/// object version ids, which is where Mobingi's came from.
pub fn version_id() -> String {
    const SET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| char::from(SET[rng.random_range(0..SET.len())]))
        .collect()
}

/// A client id for API credentials: `fc-<user_id>-<10 random>`.
pub fn client_id(user_id: &str) -> String {
    format!("fc-{user_id}-{}", random_alphanumeric(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_the_mobingi_examples() {
        let user = user_id();
        assert_eq!(user.len(), 13);
        assert!(user
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let template = template_id(&user);
        assert!(template.starts_with(&format!("mo-{user}-")));
        assert!(template.ends_with("-tk"));
        assert_eq!(template.len(), "mo-".len() + 13 + 1 + 9 + 3);
        let version = version_id();
        assert_eq!(version.len(), 32);
        assert!(version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.'));
        assert_ne!(version_id(), version_id());
    }
}
