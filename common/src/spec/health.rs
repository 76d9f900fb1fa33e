//! Health checks: an HTTP GET on the container's port or a command.

use super::fields::{get, integer, object, string, words, Checker};
use super::limits::{MAX_PROBE, MIN_PROBE, RETRIES};
use super::units::duration;
use serde_json::Map;
use serde_json::Value;
use std::time::Duration;

/// A health check.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// What is tried.
    pub probe: Probe,
    /// Time between tries.
    pub interval: Duration,
    /// How long one try may take.
    pub timeout: Duration,
    /// Failed tries in a row before the container counts as unhealthy.
    pub retries: u32,
    /// Failures in this time after start do not count.
    pub start_period: Duration,
}

/// What a health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// GET `path` on the container's `port`; 2xx/3xx is healthy.
    Http {
        /// Request path, starting with `/`, without spaces or control
        /// characters (it goes into the request line).
        path: String,
        /// The container's port.
        port: u16,
    },
    /// Runs a command in the container; exit code 0 is healthy.
    Command(Vec<String>),
}

/// `health_check` at `path`.
pub(crate) fn health(check: &mut Checker, value: &Value, path: &str) -> Option<Health> {
    let section = check.take(path, object(value, 16))?;
    let probe = probe(check, section, path, "command");
    let timing = |check: &mut Checker, key: &str, default: Duration, min: Duration| {
        check
            .optional(section, path, key, |v| duration(v, min, MAX_PROBE))
            .unwrap_or(default)
    };
    let interval = timing(check, "interval", Duration::from_secs(10), MIN_PROBE);
    let timeout = timing(check, "timeout", Duration::from_secs(5), MIN_PROBE);
    let start_period = timing(check, "start_period", Duration::ZERO, Duration::ZERO);
    let retries = check
        .optional(section, path, "retries", |v| integer(v, 0, RETRIES))
        .unwrap_or(3)
        .max(1);
    let probe = probe?;
    Some(Health {
        probe,
        interval,
        timeout,
        retries: u32::try_from(retries).unwrap_or(u32::MAX),
        start_period,
    })
}

/// What a health check (`command_key` `command`) or a pre-stop hook
/// (`exec`) does: exactly one of `http` and the command.
pub(crate) fn probe(
    check: &mut Checker,
    section: &Map<String, Value>,
    path: &str,
    command_key: &str,
) -> Option<Probe> {
    let http = check.optional(section, path, "http", http);
    let command = check.optional(section, path, command_key, |value| {
        let argv = words(value)?;
        if argv.is_empty() {
            return Err("must name a command".into());
        }
        Ok(argv)
    });
    match (http, command) {
        (Some(http), None) => Some(http),
        (None, Some(argv)) => Some(Probe::Command(argv)),
        (None, None) if get(section, "http").is_some() || get(section, command_key).is_some() => {
            None
        }
        _ => {
            check.report(
                path,
                format!("give exactly one of http {{path, port}} or {command_key}"),
            );
            None
        }
    }
}

/// `http: {path, port}`.
pub(crate) fn http(value: &Value) -> Result<Probe, String> {
    let section = object(value, 8)?;
    let port = match get(section, "port") {
        None => return Err("port is required".into()),
        Some(port) => integer(port, 1, u64::from(u16::MAX)).map_err(|err| format!("port {err}"))?,
    };
    let path = match get(section, "path") {
        None => "/".to_owned(),
        Some(path) => {
            let path = string(path, 2048).map_err(|err| format!("path {err}"))?;
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "path {path:?} must start with / and hold no spaces or control characters"
                ));
            }
            path.to_owned()
        }
    };
    Ok(Probe::Http {
        path,
        port: u16::try_from(port).map_err(|_| "port is out of range".to_owned())?,
    })
}
