//! The REST fallback for a notice: while the fleet link is down, the agent
//! also posts the notice to `POST /v3/event/spot/shutdown`, authenticated
//! as itself with the REST token the controller handed it in its last
//! welcome (a stack's token would let it speak for other VMs, and gets the
//! server's deadline instead of the cloud's). The notice keeps its
//! lifecycle id, so the controller records it once even when the link
//! delivers it later too.

use super::http;
use crate::state::AgentStore;
use flotilla_common::wire::messages::{CloudNotice, LifecycleReport};
use std::path::Path;
use std::time::Duration;

const PATH: &str = "/v3/event/spot/shutdown";
const TIMEOUT: Duration = Duration::from_secs(3);

/// Why a fallback attempt did not land.
#[derive(Debug, thiserror::Error)]
pub enum FallbackError {
    #[error("the controller's REST URL is unknown (it was never told over the link)")]
    NoUrl,
    #[error("no REST token to report with (the controller never welcomed this agent)")]
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

/// The agent's REST token from `path`, if it has one.
fn token(path: &Path) -> Result<String, FallbackError> {
    let text = std::fs::read_to_string(path).map_err(|_| FallbackError::NoToken)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(FallbackError::NoToken);
    }
    Ok(token.to_owned())
}

/// Posts the notice once with the agent's own token.
pub async fn post(
    store: &AgentStore,
    token_path: &Path,
    instance_id: &str,
    report: &LifecycleReport,
    notice: &CloudNotice,
    tls: &std::sync::Arc<rustls::ClientConfig>,
) -> Result<(), FallbackError> {
    let url = store.api_url()?.ok_or(FallbackError::NoUrl)?;
    let token = token(token_path)?;
    let body = serde_json::json!({
        "instance_id": instance_id,
        "notice_id": report.id,
        "cloud": notice.cloud,
        "action": notice.action,
        "time": notice.deadline_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    });
    let bearer = format!("Bearer {token}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    match http::send_tls(
        &url,
        "POST",
        PATH,
        &headers,
        body.to_string().into_bytes(),
        TIMEOUT,
        Some(tls),
    )
    .await
    {
        Ok(answer) if answer.status == 202 => {
            tracing::info!(notice_id = report.id, "notice delivered over REST");
            Ok(())
        }
        Ok(answer) => Err(FallbackError::Refused(answer.status)),
        Err(error) => Err(FallbackError::Http { url, error }),
    }
}
