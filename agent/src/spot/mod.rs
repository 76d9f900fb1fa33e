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

pub mod detect;
pub mod fallback;
pub mod http;
pub mod watch;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl Cloud {
    /// The name used in labels, events and the wire.
    pub fn name(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Gcp => "gcp",
            Cloud::Azure => "azure",
        }
    }
}

impl NoticeKind {
    /// The action's name on the wire and in events.
    pub fn action(&self) -> &'static str {
        match self {
            NoticeKind::Terminate => "terminate",
            NoticeKind::Stop => "stop",
            NoticeKind::Hibernate => "hibernate",
            NoticeKind::Preempt => "preempt",
            NoticeKind::Rebalance => "rebalance",
            NoticeKind::Maintenance => "maintenance",
        }
    }

    /// The warning each cloud documents when its notice carries no time:
    /// AWS two minutes, GCP preemption 30 s and host maintenance 60 s,
    /// Azure Spot eviction at least 30 s.
    fn documented_warning(&self, cloud: Cloud) -> Option<i64> {
        match (self, cloud) {
            (NoticeKind::Rebalance, _) => None,
            (NoticeKind::Maintenance, _) => Some(60_000),
            (NoticeKind::Preempt, _) => Some(30_000),
            (_, Cloud::Aws) => Some(120_000),
            (_, _) => Some(30_000),
        }
    }
}

impl Notice {
    /// The notice as reported to the controller: the cloud's time as ms
    /// since the epoch (RFC 3339 for AWS, RFC 1123 for Azure), or the
    /// documented warning from `now_ms` when the cloud gives none.
    pub fn to_wire(&self, now_ms: i64) -> flotilla_common::wire::messages::CloudNotice {
        let parsed = self.deadline.as_deref().and_then(|text| {
            chrono::DateTime::parse_from_rfc3339(text)
                .or_else(|_| chrono::DateTime::parse_from_rfc2822(text))
                .ok()
                .map(|t| t.timestamp_millis())
        });
        let deadline_ms = match (&self.kind, parsed) {
            (NoticeKind::Rebalance, _) => None,
            (_, Some(at)) => Some(at),
            (kind, None) => kind.documented_warning(self.cloud).map(|w| now_ms + w),
        };
        flotilla_common::wire::messages::CloudNotice {
            cloud: self.cloud.name().to_owned(),
            action: self.kind.action().to_owned(),
            deadline_ms,
        }
    }
}

/// Why a check found nothing usable (logged and retried).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("no answer in time")]
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

/// GCP's `preempted`, asked with `wait_for_change=true`: with `last_etag`
/// the metadata server holds the answer until the value changes (or
/// `hang` passes), so a preemption is seen the moment it is set. Returns
/// whether the VM is preempted and the value's ETag (`None` from a server
/// that does not version its values).
pub async fn gcp_preempted_wait(
    base: &str,
    last_etag: Option<&str>,
    hang: Duration,
) -> Result<(bool, Option<String>), CheckError> {
    let path = match last_etag {
        Some(etag) => format!(
            "/computeMetadata/v1/instance/preempted?wait_for_change=true&last_etag={etag}&timeout_sec={}",
            hang.as_secs().max(1)
        ),
        None => "/computeMetadata/v1/instance/preempted".to_owned(),
    };
    let headers = [("Metadata-Flavor", "Google")];
    let answer = http::request(base, "GET", &path, &headers, hang + Duration::from_secs(5)).await?;
    if answer.status != 200 {
        return Err(CheckError::Unexpected {
            status: answer.status,
            path,
        });
    }
    match answer.body_text().trim() {
        "TRUE" => Ok((true, answer.etag)),
        "FALSE" => Ok((false, answer.etag)),
        other => Err(CheckError::Undecodable {
            path,
            reason: format!("expected TRUE or FALSE, got {other:?}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_come_from_the_cloud_or_its_documented_warning() {
        let aws = Notice {
            cloud: Cloud::Aws,
            kind: NoticeKind::Terminate,
            deadline: Some("2026-11-25T17:11:44Z".into()),
        };
        assert_eq!(aws.to_wire(0).deadline_ms, Some(1_795_626_704_000));
        assert_eq!(aws.to_wire(0).action, "terminate");
        let azure = Notice {
            cloud: Cloud::Azure,
            kind: NoticeKind::Preempt,
            deadline: Some("Wed, 25 Nov 2026 17:11:44 GMT".into()),
        };
        assert_eq!(azure.to_wire(0).deadline_ms, Some(1_795_626_704_000));
        let gcp = Notice {
            cloud: Cloud::Gcp,
            kind: NoticeKind::Preempt,
            deadline: None,
        };
        assert_eq!(gcp.to_wire(1_000).deadline_ms, Some(31_000));
        let garbled = Notice {
            cloud: Cloud::Aws,
            kind: NoticeKind::Stop,
            deadline: Some("soon".into()),
        };
        assert_eq!(garbled.to_wire(0).deadline_ms, Some(120_000));
        let rebalance = Notice {
            cloud: Cloud::Aws,
            kind: NoticeKind::Rebalance,
            deadline: Some("2026-11-25T17:11:44Z".into()),
        };
        assert_eq!(rebalance.to_wire(0).deadline_ms, None);
        assert!(!rebalance.to_wire(0).is_final());
    }
}
