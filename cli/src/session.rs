//! Where the controller is and the token to use: `--url`/`--token` (or
//! `FLOTILLA_URL`/`FLOTILLA_TOKEN`) first, else what `flotilla login`
//! cached in `$FLOTILLA_CONFIG_DIR` (default `$XDG_CONFIG_HOME/flotilla`
//! or `~/.config/flotilla`), in `session.json`, 0600 in a 0700 directory.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Name of the cache file.
pub const FILE: &str = "session.json";

/// A logged-in session.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    /// `http://host:port`, no trailing slash.
    pub url: String,
    pub token: String,
    /// When the token expires (seconds since the epoch).
    pub expires_at: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why no session could be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("not logged in: run `flotilla login --url URL --client-id ID --client-secret SECRET` (or set FLOTILLA_URL and FLOTILLA_TOKEN)")]
    NotLoggedIn,
    #[error("the cached token for {0} has expired: run `flotilla login` again")]
    Expired(String),
    #[error("cannot read or write {path}: {reason}")]
    File { path: String, reason: String },
}

/// The directory holding the session cache.
pub fn dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLOTILLA_CONFIG_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(dir).join("flotilla");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".config").join("flotilla")
}

fn now() -> u64 {
    u64::try_from(flotilla_common::time::now_ms().div_euclid(1000)).unwrap_or(0)
}

/// Stores a session (0600).
pub fn save(session: &Session) -> Result<PathBuf, SessionError> {
    let dir = dir();
    let path = dir.join(FILE);
    let fail = |err: std::io::Error| SessionError::File {
        path: path.display().to_string(),
        reason: err.to_string(),
    };
    flotilla_common::files::private_dir(&dir).map_err(fail)?;
    let bytes = serde_json::to_vec_pretty(session).map_err(|err| SessionError::File {
        path: path.display().to_string(),
        reason: err.to_string(),
    })?;
    flotilla_common::files::write_private(&path, &bytes).map_err(fail)?;
    Ok(path)
}

/// The session to use: flags or variables, else the cache.
pub fn resolve(url: Option<&str>, token: Option<&str>) -> Result<Session, SessionError> {
    if let (Some(url), Some(token)) = (url, token) {
        return Ok(Session {
            url: url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            expires_at: u64::MAX,
        });
    }
    let path = dir().join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(SessionError::NotLoggedIn)
        }
        Err(err) => {
            return Err(SessionError::File {
                path: path.display().to_string(),
                reason: err.to_string(),
            })
        }
    };
    let mut session: Session =
        serde_json::from_slice(&bytes).map_err(|err| SessionError::File {
            path: path.display().to_string(),
            reason: err.to_string(),
        })?;
    if let Some(url) = url {
        if url.trim_end_matches('/') != session.url {
            return Err(SessionError::NotLoggedIn);
        }
    }
    if let Some(token) = token {
        session.token = token.to_owned();
    } else if session.expires_at <= now() {
        return Err(SessionError::Expired(session.url));
    }
    Ok(session)
}

/// Seconds from now, as an expiry time.
pub fn expires_in(secs: u64) -> u64 {
    now().saturating_add(secs)
}
