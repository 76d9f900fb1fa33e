//! The watch loop: asks the metadata service every poll interval and hands
//! each notice on. A failing or slow service is logged (once per failure
//! streak, not once per poll) and asked again; it never stops the agent.

use super::{check, Cloud, Notice};
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest a single check may take (each poll starts on time regardless).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how often to look.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub cloud: Cloud,
    /// The metadata service's base URL (`http://169.254.169.254`).
    pub base: String,
    pub interval: Duration,
}

/// Polls until `notices` closes. Every notice found is sent, each poll
/// (the receiver decides what is new).
pub async fn watch(settings: WatchSettings, notices: mpsc::Sender<Notice>) {
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing: Option<String> = None;
    tracing::info!(cloud = settings.cloud.name(), base = %settings.base, interval_ms = settings.interval.as_millis() as u64, "watching for spot notices");
    loop {
        tick.tick().await;
        let timeout = CHECK_TIMEOUT.max(settings.interval);
        match check(settings.cloud, &settings.base, timeout).await {
            Ok(found) => {
                if let Some(error) = failing.take() {
                    tracing::info!(previous_error = %error, "metadata service answers again");
                }
                if let Some(notice) = found {
                    if notices.send(notice).await.is_err() {
                        return;
                    }
                }
            }
            Err(err) => {
                let text = err.to_string();
                if failing.as_deref() != Some(text.as_str()) {
                    tracing::warn!(cloud = settings.cloud.name(), error = %text, "metadata check failed; retrying");
                } else {
                    tracing::debug!(error = %text, "metadata check failed again");
                }
                failing = Some(text);
            }
        }
    }
}
