//! Container status reports, whichever path they came by (the fleet link,
//! the REST event endpoint, the original alm-agent's reports): one place
//! makes the instance's latest status and its `container.status` event, so
//! both have one shape, and one place records a report that did not come
//! over the fleet link (those are applied in sequence by
//! `Store::apply_statuses`).

use crate::clock;
use crate::store::{InstanceStatusRecord, StatusWrite, Store, StoreResult};
use serde_json::json;

/// The event type of a container status report.
pub const CONTAINER_STATUS: &str = "container.status";

/// Longest reason kept, in characters.
pub const REASON_CHARS: usize = 1024;

/// How a report arrived; recorded as its `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Flotilla's agent, over the fleet link.
    Quic,
    /// `POST /v3/event/container/status`.
    Http,
    /// The original alm-agent's `POST /v3/alm/agent/container_status`.
    AlmAgent,
}

impl Source {
    /// The recorded name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Quic => "quic",
            Source::Http => "http",
            Source::AlmAgent => "alm-agent",
        }
    }
}

/// One container status, as any path reports it.
#[derive(Debug, Clone)]
pub struct Report {
    pub stack_id: String,
    pub instance_id: String,
    pub status: String,
    pub flag: Option<String>,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    /// When it happened (ms since the epoch).
    pub time_ms: i64,
    pub version_id: Option<String>,
    pub agent_id: Option<String>,
    pub commit: Option<String>,
    /// The agent's sequence number (fleet link only).
    pub seq: u64,
    pub source: Source,
}

/// The instance record and the event of `report` (its reason cut to
/// [`REASON_CHARS`]).
pub fn write(report: Report) -> StatusWrite {
    let reason: Option<String> = report
        .reason
        .map(|r| r.chars().take(REASON_CHARS).collect());
    let event_data = json!({
        "status": report.status,
        "flag": report.flag,
        "exit_code": report.exit_code,
        "reason": reason,
        "version_id": report.version_id,
        "agent_id": report.agent_id,
        "seq": (report.source == Source::Quic).then_some(report.seq),
        "commit": report.commit,
        "source": report.source.as_str(),
    });
    StatusWrite {
        seq: report.seq,
        instance: InstanceStatusRecord {
            stack_id: report.stack_id,
            instance_id: report.instance_id,
            status: report.status,
            flag: report.flag,
            exit_code: report.exit_code,
            reason,
            updated: clock::rfc3339_ms(report.time_ms),
            source: report.source.as_str().to_owned(),
            version_id: report.version_id,
            agent_id: report.agent_id,
            commit: report.commit,
        },
        event_kind: CONTAINER_STATUS,
        event_data,
    }
}

/// Records a report that came over REST: the instance's latest status and
/// the event, durable before it returns.
pub async fn record(store: &Store, report: Report) -> StoreResult<()> {
    let time_ms = report.time_ms;
    let write = write(report);
    store.put_instance_status(&write.instance)?;
    store.record(
        &crate::events::Event::ContainerStatus(write.event_data),
        Some(&write.instance.stack_id),
        Some(&write.instance.instance_id),
        time_ms,
    )?;
    store.flush().await
}

/// Records a report that is not a container's status (a spot notice taken
/// as an event only, the alm-agent's own status), durable before it
/// returns.
pub async fn record_event(
    store: &Store,
    event: &crate::events::Event<'_>,
    stack_id: &str,
    instance_id: &str,
) -> StoreResult<()> {
    store.record(event, Some(stack_id), Some(instance_id), clock::now_ms())?;
    store.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(source: Source) -> Report {
        Report {
            stack_id: "st".into(),
            instance_id: "i-1".into(),
            status: "running".into(),
            flag: Some("Web01".into()),
            exit_code: None,
            reason: Some("x".repeat(2000)),
            time_ms: 0,
            version_id: Some("v1".into()),
            agent_id: Some("ag-1".into()),
            commit: None,
            seq: 7,
            source,
        }
    }

    #[test]
    fn every_path_makes_one_shape() {
        for (source, name, seq) in [
            (Source::Quic, "quic", json!(7)),
            (Source::Http, "http", json!(null)),
            (Source::AlmAgent, "alm-agent", json!(null)),
        ] {
            let write = write(report(source));
            assert_eq!(write.event_kind, "container.status");
            let keys: Vec<&String> = write
                .event_data
                .as_object()
                .expect("object")
                .keys()
                .collect();
            assert_eq!(
                keys,
                [
                    "status",
                    "flag",
                    "exit_code",
                    "reason",
                    "version_id",
                    "agent_id",
                    "seq",
                    "commit",
                    "source"
                ]
            );
            assert_eq!(write.event_data["source"], name);
            assert_eq!(write.event_data["seq"], seq);
            assert_eq!(write.instance.source, name);
            assert_eq!(
                write.instance.reason.as_ref().map(|r| r.chars().count()),
                Some(REASON_CHARS)
            );
            assert_eq!(
                write.event_data["reason"].as_str().map(str::len),
                Some(REASON_CHARS)
            );
            assert_eq!(write.instance.updated, "1970-01-01T00:00:00.000Z");
        }
    }
}
