//! The REST fallback for a notice: while the fleet link is down, the agent
//! also posts the notice to `POST /v3/event/spot/shutdown` with the token
//! of a stack it runs. The notice keeps its lifecycle id, so the
//! controller records it once even when the link delivers it later too.

use super::http;
use crate::state::AgentStore;
use flotilla_common::wire::messages::{CloudNotice, LifecycleReport};
use std::time::Duration;

const PATH: &str = "/v3/event/spot/shutdown";
const TIMEOUT: Duration = Duration::from_secs(3);

/// Why a fallback attempt did not land.
#[derive(Debug, thiserror::Error)]
pub enum FallbackError {
    #[error("the controller's REST URL is unknown (it was never told over the link)")]
    NoUrl,
    #[error("no stack token to report with (no placements)")]
    NoToken,
    #[error("the REST API answered {0}")]
    Refused(u16),
    #[error("the REST API at {url}: {error}")]
    Http {
        url: String,
        error: super::CheckError,
    },
    #[error(transparent)]
    Store(#[from] crate::state::StateError),
}

/// Posts the notice once, trying each stack's token until one is taken.
pub async fn post(
    store: &AgentStore,
    instance_id: &str,
    report: &LifecycleReport,
    notice: &CloudNotice,
) -> Result<(), FallbackError> {
    let url = store.api_url()?.ok_or(FallbackError::NoUrl)?;
    let desired =
        store
            .desired()?
            .unwrap_or_else(|| flotilla_common::wire::messages::DesiredState {
                generation: 0,
                placements: Vec::new(),
            });
    let mut tried = std::collections::BTreeSet::new();
    let mut last = FallbackError::NoToken;
    for placement in &desired.placements {
        if placement.auth_token.is_empty() || !tried.insert(placement.stack_id.as_str()) {
            continue;
        }
        let body = serde_json::json!({
            "stack_id": placement.stack_id,
            "instance_id": instance_id,
            "notice_id": report.id,
            "cloud": notice.cloud,
            "action": notice.action,
            "time": notice.deadline_ms
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        });
        let bearer = format!("Bearer {}", placement.auth_token);
        let headers = [
            ("Authorization", bearer.as_str()),
            ("Content-Type", "application/json"),
        ];
        match http::send(
            &url,
            "POST",
            PATH,
            &headers,
            body.to_string().into_bytes(),
            TIMEOUT,
        )
        .await
        {
            Ok(answer) if answer.status == 202 => {
                tracing::info!(stack_id = %placement.stack_id, notice_id = report.id, "notice delivered over REST");
                return Ok(());
            }
            Ok(answer) => last = FallbackError::Refused(answer.status),
            Err(error) => {
                last = FallbackError::Http {
                    url: url.clone(),
                    error,
                }
            }
        }
    }
    Err(last)
}
