//! `pre_stop`: what runs before a container is sent SIGTERM, on every stop
//! the agent makes (update, delete, drain, spot notice, scale-down, an
//! operator's stop or restart). It lets the application leave a load
//! balancer or finish its work first; images that follow the original
//! Mobingi convention ship `/pre_shutdown.sh` for this and name it here.
//! Without `pre_stop` nothing runs.

use super::fields::{object, Checker};
use super::health::{probe, Probe};
use super::limits::{DEFAULT_PRE_STOP, MAX_GRACE, MIN_PROBE};
use super::units::duration;
use serde_json::Value;
use std::time::Duration;

/// A pre-stop hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreStop {
    /// A command run in the container (`exec`), or a GET on its port
    /// (`http`): the same two forms a health check has.
    pub action: Probe,
    /// How long the hook is waited for; a spot deadline shortens it.
    pub timeout: Duration,
}

/// `pre_stop` at `path`.
pub(crate) fn pre_stop(check: &mut Checker, value: &Value, path: &str) -> Option<PreStop> {
    let section = check.take(path, object(value, 8))?;
    let action = probe(check, section, path, "exec");
    let timeout = check
        .optional(section, path, "timeout", |v| {
            duration(v, MIN_PROBE, MAX_GRACE)
        })
        .unwrap_or(DEFAULT_PRE_STOP);
    Some(PreStop {
        action: action?,
        timeout,
    })
}
