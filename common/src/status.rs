//! Container statuses, named as the Mobingi alm-agent and the Akkeris dyno
//! states name them, so operators' existing tooling reads them unchanged.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A container's lifecycle state as reported by an agent.
///
/// The first five are the alm-agent's values; the failure states come from
/// Akkeris so a failure says what kind of failure it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerStatus {
    Starting,
    Updating,
    Restarting,
    Running,
    Stopping,
    Terminated,
    StartFailure,
    AppCrashed,
    ProbeFailure,
    /// Held stopped by an operator (the stack's stop, or the instance's):
    /// it stays so through agent restarts and clean-ups until started.
    Stopped,
}

impl ContainerStatus {
    /// Every status, in lifecycle order, for error messages and docs.
    pub const ALL: [ContainerStatus; 10] = [
        Self::Starting,
        Self::Updating,
        Self::Restarting,
        Self::Running,
        Self::Stopping,
        Self::Terminated,
        Self::StartFailure,
        Self::AppCrashed,
        Self::ProbeFailure,
        Self::Stopped,
    ];

    /// The wire and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Updating => "updating",
            Self::Restarting => "restarting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Terminated => "terminated",
            Self::StartFailure => "start-failure",
            Self::AppCrashed => "app-crashed",
            Self::ProbeFailure => "probe-failure",
            Self::Stopped => "stopped",
        }
    }

    /// Whether this status means the container failed (drives `*_FAILED`).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Self::StartFailure | Self::AppCrashed | Self::ProbeFailure
        )
    }
}

impl fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status string that is not one of [`ContainerStatus::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown container status {0:?}; expected one of: {list}", list = ContainerStatus::ALL.map(|s| s.as_str()).join(", "))]
pub struct UnknownStatus(pub String);

impl FromStr for ContainerStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for status in ContainerStatus::ALL {
            let json = serde_json::to_string(&status).expect("serialize");
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(
                status.as_str().parse::<ContainerStatus>().ok(),
                Some(status)
            );
        }
        let err = "exploded".parse::<ContainerStatus>().expect_err("unknown");
        assert!(err.to_string().contains("start-failure"));
    }
}
