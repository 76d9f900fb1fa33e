//! The image reference and the registry credentials for its pull.

use super::fields::{get, object, string, token, Checker};
use super::limits::{IMAGE_LEN, TEXT_LEN};
use serde_json::Value;

/// Registry credentials for the pull.
#[derive(Clone, PartialEq, Eq)]
pub struct Registry {
    /// The registry host (`docker.io` when the image names none).
    pub server: String,
    /// The account.
    pub username: String,
    /// The password or token; never printed.
    pub password: String,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// `image`: a plausible reference: no whitespace, a lowercase repository
/// (tags may have capitals), no empty parts. The engine has the last word;
/// this catches typos before a pull is tried.
pub(crate) fn image(value: &Value) -> Result<String, String> {
    // Not trimmed: the document's pattern refuses surrounding spaces too.
    let image = string(value, IMAGE_LEN)?;
    let name = image.split('@').next().unwrap_or(image);
    let repository = match name.rfind(':') {
        Some(colon) if colon > name.rfind('/').unwrap_or(0) => &name[..colon],
        _ => name,
    };
    let ok = !image.is_empty()
        && !image.chars().any(|c| c.is_whitespace() || c.is_control())
        && !repository.is_empty()
        && !repository.starts_with('-')
        && !repository.split('/').any(str::is_empty)
        && repository.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '/' | ':')
        });
    if ok {
        Ok(image.to_owned())
    } else {
        Err(format!("{image:?} is not a valid image reference"))
    }
}

/// The registry host of an image reference (`docker.io` when none).
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_owned()
        }
        _ => "docker.io".to_owned(),
    }
}

/// `registry: {server?, username, password}` for `image`.
pub(crate) fn registry(
    check: &mut Checker,
    value: &Value,
    path: &str,
    image: Option<&str>,
) -> Option<Registry> {
    let section = check.take(path, object(value, 8))?;
    let server = check.optional(section, path, "server", |v| {
        token(v, 256).map(str::to_owned)
    });
    let mut credential = |key: &str| match get(section, key) {
        None => {
            check.report(&format!("{path}/{key}"), format!("{key} is required"));
            None
        }
        Some(_) => check.optional(section, path, key, |v| {
            string(v, TEXT_LEN).map(str::to_owned)
        }),
    };
    let username = credential("username");
    let password = credential("password");
    Some(Registry {
        server: server.unwrap_or_else(|| image.map(registry_of).unwrap_or_default()),
        username: username?,
        password: password?,
    })
}
