//! Restart and pull policies.

use super::fields::{get, integer, object, token};
use super::limits::MAX_ATTEMPTS;
use serde_json::Value;

/// When to restart a container that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Whatever the exit code; gives up (`app-crashed`) after repeated
    /// quick deaths.
    Always,
    /// Only after a non-zero exit, at most this many times.
    OnFailure {
        /// Restarts before giving up.
        max_attempts: u32,
    },
    /// Never.
    Never,
}

/// When to pull the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Only when the engine does not have it.
    IfNotPresent,
    /// Before every create.
    Always,
}

/// `"always"`, `"never"`, `"on-failure"`, or
/// `{"policy": "on-failure", "max_attempts": 5}`.
pub(crate) fn restart(value: &Value) -> Result<Restart, String> {
    let (name, max_attempts) = match value {
        Value::Object(_) => {
            let section = object(value, 4)?;
            let name = get(section, "policy")
                .ok_or("policy is required")
                .map_err(str::to_owned)
                .and_then(|v| token(v, 32).map_err(|err| format!("policy {err}")))?;
            let max = get(section, "max_attempts")
                .map(|v| integer(v, 0, MAX_ATTEMPTS).map_err(|err| format!("max_attempts {err}")))
                .transpose()?;
            (name, max)
        }
        value => (token(value, 32)?, None),
    };
    match name {
        "always" => Ok(Restart::Always),
        "never" | "no" => Ok(Restart::Never),
        "on-failure" => Ok(Restart::OnFailure {
            max_attempts: max_attempts
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or(5),
        }),
        other => Err(format!("{other:?} is not always, on-failure or never")),
    }
}

/// `"if-not-present"` or `"always"`.
pub(crate) fn pull_policy(value: &Value) -> Result<PullPolicy, String> {
    match token(value, 32)? {
        "if-not-present" => Ok(PullPolicy::IfNotPresent),
        "always" => Ok(PullPolicy::Always),
        other => Err(format!(
            "{other:?} is neither \"if-not-present\" nor \"always\""
        )),
    }
}
