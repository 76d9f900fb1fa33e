//! Code deploys from git: the repository, reference, keys and poll.

use super::fields::{boolean, get, string, token, Checker};
use super::limits::{KEY_LEN, MAX_GIT_POLL, MIN_GIT_POLL, TEXT_LEN};
use super::units::duration;
use serde_json::{Map, Value};
use std::time::Duration;

/// A code deploy from git.
#[derive(Clone, PartialEq, Eq)]
pub struct Git {
    /// `https://`, `ssh://` or `user@host:path`; may carry credentials, so
    /// never printed.
    pub repo: String,
    /// Branch, tag or commit (default `master`).
    pub reference: String,
    /// SSH key for the fetch; never logged.
    pub private_key: Option<String>,
    /// `known_hosts` lines the server's host key must match.
    pub known_hosts: Option<String>,
    /// Accept an unknown host key the first time (only when asked).
    pub trust_on_first_use: bool,
    /// Check the reference for new commits this often.
    pub poll: Option<Duration>,
}

impl std::fmt::Debug for Git {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Git")
            .field("repo", &"<redacted>")
            .field("reference", &self.reference)
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("poll", &self.poll)
            .finish()
    }
}

/// Whether `repo` is a remote the agent may fetch: `https://host/...`,
/// `ssh://[user@]host[:port]/...` or scp-like `user@host:path`. Local
/// paths, `file://`, `http://`, `git://` and helper transports (`ext::`)
/// are refused: they read the VM's own disk or travel unauthenticated.
pub fn is_remote_repo(repo: &str) -> bool {
    // A host, with an optional port (IPv6 in brackets).
    let host_ok = |host: &str| {
        !host.is_empty()
            && !host.starts_with('-')
            && host.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':')
            })
    };
    let user_ok = |user: &str| {
        !user.is_empty()
            && !user.starts_with('-')
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    if repo.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let url = |rest: &str, with_credentials: bool| {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = match authority.rsplit_once('@') {
            Some((user, host)) if with_credentials || user_ok(user) => host,
            Some(_) => return false,
            None => authority,
        };
        host_ok(host) && !path.is_empty()
    };
    if let Some(rest) = repo.strip_prefix("https://") {
        return url(rest, true);
    }
    if let Some(rest) = repo.strip_prefix("ssh://") {
        return url(rest, false);
    }
    // scp-like: user@host:path, with no scheme anywhere.
    match repo.split_once('@') {
        Some((user, rest)) if !repo.contains("://") => match rest.split_once(':') {
            Some((host, path)) => {
                user_ok(user) && host_ok(host) && !host.contains(':') && !path.is_empty()
            }
            None => false,
        },
        _ => false,
    }
}

/// A branch, tag or commit name git cannot mistake for an option.
fn reference(value: &Value) -> Result<String, String> {
    let text = token(value, 256)?;
    if text.starts_with('-') || text.contains("..") || text.contains('\\') {
        return Err(format!("{text:?} is not a branch, tag or commit name"));
    }
    Ok(text.to_owned())
}

/// The code deploy of a container section, when `gitRepo` is given.
pub(crate) fn git(check: &mut Checker, section: &Map<String, Value>) -> Option<Git> {
    let repo = check.optional(section, "", "gitRepo", |value| {
        let repo = string(value, TEXT_LEN)?.trim();
        if repo.is_empty() || is_remote_repo(repo) {
            Ok(repo.to_owned())
        } else {
            Err("must be an https://, ssh:// or user@host:path repository (local paths, file://, http:// and git:// are refused)".into())
        }
    });
    let reference = check.optional(section, "", "gitReference", |value| match value {
        Value::String(s) if s.trim().is_empty() => Ok(None),
        value => reference(value).map(Some),
    });
    let key = |value: &Value| {
        string(value, KEY_LEN).map(|k| Some(k.to_owned()).filter(|k| !k.trim().is_empty()))
    };
    let private_key = check.optional(section, "", "gitPrivateKey", key);
    let known_hosts = check.optional(section, "", "gitKnownHosts", key);
    let trust_on_first_use = check.optional(section, "", "gitTrustOnFirstUse", boolean);
    let poll = check.optional(section, "", "gitPoll", |value| {
        duration(value, MIN_GIT_POLL, MAX_GIT_POLL)
    });
    let repo = repo.filter(|repo| !repo.is_empty())?;
    Some(Git {
        repo,
        reference: reference.flatten().unwrap_or_else(|| "master".into()),
        private_key: private_key.flatten(),
        known_hosts: known_hosts.flatten(),
        trust_on_first_use: trust_on_first_use.unwrap_or(false),
        poll,
    })
}

/// `codeDir`: an absolute path in the container.
pub(crate) fn code_dir(check: &mut Checker, section: &Map<String, Value>) -> Option<String> {
    get(section, "codeDir")?;
    check.optional(section, "", "codeDir", |value| {
        let dir = token(value, TEXT_LEN)?;
        super::volumes::normalise_path(dir)
            .filter(|d| d != "/")
            .ok_or_else(|| format!("{dir:?} must be an absolute path other than /"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories() {
        for (repo, want) in [
            ("https://github.com/mobingilabs/default-site-php.git", true),
            ("https://user:secret@git.example.com/team/site.git", true),
            ("https://git.example.com:8443/site.git", true),
            ("ssh://root@127.0.0.1:2222/srv/site.git", true),
            ("ssh://git.example.com/site.git", true),
            ("git@github.com:team/site.git", true),
            ("/srv/site.git", false),
            ("site.git", false),
            ("./site", false),
            ("file:///srv/site.git", false),
            ("http://example.com/site.git", false),
            ("git://example.com/site.git", false),
            ("ext::sh -c touch% /tmp/pwned", false),
            ("ssh://-oProxyCommand=touch%20x/site", false),
            ("ssh://-oProxyCommand=x@host/site", false),
            ("-u@host:path", false),
            ("git@-oProxyCommand=x:path", false),
            ("https://", false),
            ("https://host", false),
            ("git@host:", false),
            ("git@host", false),
            ("https://host/a b", false),
        ] {
            assert_eq!(is_remote_repo(repo), want, "{repo}");
        }
    }

    #[test]
    fn references() {
        use serde_json::json;
        assert!(reference(&json!("main")).is_ok());
        assert!(reference(&json!("v1.2.3")).is_ok());
        assert!(reference(&json!("--upload-pack=x")).is_err());
        assert!(reference(&json!("a..b")).is_err());
        assert!(reference(&json!("a b")).is_err());
    }
}
