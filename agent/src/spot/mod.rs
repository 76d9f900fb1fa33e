//! Spot and preemption notices from the cloud's instance metadata service.
//!
//! Each cloud documents one way to learn that the VM is about to go:
//! - AWS (IMDSv2): a session token from `PUT /latest/api/token`, then
//!   `GET /latest/meta-data/spot/instance-action` (404 while nothing is
//!   scheduled) and the rebalance recommendation.
//! - GCP: `GET /computeMetadata/v1/instance/preempted` (`TRUE`/`FALSE`)
//!   and `instance/maintenance-event`, with `Metadata-Flavor: Google`.
//! - Azure: Scheduled Events (`Preempt`, `Terminate`) with `Metadata: true`.
//!
//! Only the documented notice counts as one: errors, time-outs and
//! unexpected answers (an IMDSv2 401, say) are errors to log and retry,
//! never a termination.

pub mod http;

use serde::Deserialize;
use std::time::Duration;

/// Which metadata service to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    Aws,
    Gcp,
    Azure,
}

impl Cloud {
    /// The documented base URL of the cloud's metadata service.
    pub fn default_base(self) -> &'static str {
        match self {
            Cloud::Aws => "http://169.254.169.254",
            Cloud::Gcp => "http://metadata.google.internal",
            Cloud::Azure => "http://169.254.169.254",
        }
    }
}

/// What the cloud announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeKind {
    /// The VM will be terminated (AWS `terminate`, Azure `Terminate`).
    Terminate,
    /// AWS `stop`.
    Stop,
    /// AWS `hibernate`.
    Hibernate,
    /// GCP preemption, Azure `Preempt`.
    Preempt,
    /// AWS rebalance recommendation: elevated risk, not yet a notice.
    Rebalance,
    /// GCP host maintenance that terminates the VM.
    Maintenance,
}

/// A notice, as the cloud gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub cloud: Cloud,
    pub kind: NoticeKind,
    /// When the cloud acts (RFC 3339 or the cloud's own format), if said.
    pub deadline: Option<String>,
}

/// Why a check found nothing usable (logged and retried).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckError {
    #[error("metadata service unreachable: {0}")]
    Unreachable(String),
    #[error("metadata service timed out")]
    TimedOut,
    #[error("unexpected answer {status} from {path}")]
    Unexpected { status: u16, path: String },
    #[error("undecodable answer from {path}: {reason}")]
    Undecodable { path: String, reason: String },
}

/// Asks the metadata service once. `Ok(None)`: nothing scheduled.
pub async fn check(
    cloud: Cloud,
    base: &str,
    timeout: Duration,
) -> Result<Option<Notice>, CheckError> {
    match cloud {
        Cloud::Aws => aws(base, timeout).await,
        Cloud::Gcp => gcp(base, timeout).await,
        Cloud::Azure => azure(base, timeout).await,
    }
}

#[derive(Deserialize)]
struct AwsAction {
    action: String,
    time: Option<String>,
}

async fn aws(base: &str, timeout: Duration) -> Result<Option<Notice>, CheckError> {
    let token = http::request(
        base,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "300")],
        timeout,
    )
    .await?;
    if token.status != 200 {
        return Err(CheckError::Unexpected {
            status: token.status,
            path: "/latest/api/token".into(),
        });
    }
    let token = token.body_text();
    let headers = [("X-aws-ec2-metadata-token", token.trim())];
    let path = "/latest/meta-data/spot/instance-action";
    let answer = http::request(base, "GET", path, &headers, timeout).await?;
    match answer.status {
        200 => {
            let action: AwsAction =
                serde_json::from_slice(&answer.body).map_err(|err| CheckError::Undecodable {
                    path: path.into(),
                    reason: err.to_string(),
                })?;
            let kind = match action.action.as_str() {
                "terminate" => NoticeKind::Terminate,
                "stop" => NoticeKind::Stop,
                "hibernate" => NoticeKind::Hibernate,
                other => {
                    return Err(CheckError::Undecodable {
                        path: path.into(),
                        reason: format!("unknown action {other:?}"),
                    })
                }
            };
            return Ok(Some(Notice {
                cloud: Cloud::Aws,
                kind,
                deadline: action.time,
            }));
        }
        404 => {}
        status => {
            return Err(CheckError::Unexpected {
                status,
                path: path.into(),
            })
        }
    }
    let path = "/latest/meta-data/events/recommendations/rebalance";
    let answer = http::request(base, "GET", path, &headers, timeout).await?;
    match answer.status {
        200 => {
            #[derive(Deserialize)]
            struct Rebalance {
                #[serde(rename = "noticeTime")]
                notice_time: Option<String>,
            }
            let rebalance: Rebalance =
                serde_json::from_slice(&answer.body).map_err(|err| CheckError::Undecodable {
                    path: path.into(),
                    reason: err.to_string(),
                })?;
            Ok(Some(Notice {
                cloud: Cloud::Aws,
                kind: NoticeKind::Rebalance,
                deadline: rebalance.notice_time,
            }))
        }
        404 => Ok(None),
        status => Err(CheckError::Unexpected {
            status,
            path: path.into(),
        }),
    }
}

async fn gcp(base: &str, timeout: Duration) -> Result<Option<Notice>, CheckError> {
    let headers = [("Metadata-Flavor", "Google")];
    let path = "/computeMetadata/v1/instance/preempted";
    let answer = http::request(base, "GET", path, &headers, timeout).await?;
    if answer.status != 200 {
        return Err(CheckError::Unexpected {
            status: answer.status,
            path: path.into(),
        });
    }
    match answer.body_text().trim() {
        "TRUE" => {
            return Ok(Some(Notice {
                cloud: Cloud::Gcp,
                kind: NoticeKind::Preempt,
                deadline: None,
            }))
        }
        "FALSE" => {}
        other => {
            return Err(CheckError::Undecodable {
                path: path.into(),
                reason: format!("expected TRUE or FALSE, got {other:?}"),
            })
        }
    }
    let path = "/computeMetadata/v1/instance/maintenance-event";
    let answer = http::request(base, "GET", path, &headers, timeout).await?;
    if answer.status != 200 {
        return Err(CheckError::Unexpected {
            status: answer.status,
            path: path.into(),
        });
    }
    Ok(match answer.body_text().trim() {
        "TERMINATE_ON_HOST_MAINTENANCE" => Some(Notice {
            cloud: Cloud::Gcp,
            kind: NoticeKind::Maintenance,
            deadline: None,
        }),
        _ => None,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AzureEvents {
    #[serde(default)]
    events: Vec<AzureEvent>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AzureEvent {
    event_type: String,
    #[serde(default)]
    not_before: Option<String>,
}

async fn azure(base: &str, timeout: Duration) -> Result<Option<Notice>, CheckError> {
    let path = "/metadata/scheduledevents?api-version=2020-07-01";
    let answer = http::request(base, "GET", path, &[("Metadata", "true")], timeout).await?;
    if answer.status != 200 {
        return Err(CheckError::Unexpected {
            status: answer.status,
            path: path.into(),
        });
    }
    let events: AzureEvents =
        serde_json::from_slice(&answer.body).map_err(|err| CheckError::Undecodable {
            path: path.into(),
            reason: err.to_string(),
        })?;
    Ok(events.events.into_iter().find_map(|event| {
        let kind = match event.event_type.as_str() {
            "Preempt" => NoticeKind::Preempt,
            "Terminate" => NoticeKind::Terminate,
            _ => return None,
        };
        Some(Notice {
            cloud: Cloud::Azure,
            kind,
            deadline: event.not_before.filter(|d| !d.is_empty()),
        })
    }))
}
