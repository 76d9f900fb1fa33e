//! The watch loop: asks the metadata service every poll interval and hands
//! each notice on. A failing or slow service is logged (once per failure
//! streak, not once per poll) and asked again; it never stops the agent.
//!
//! On GCP a hanging GET (`wait_for_change=true` with the last ETag) runs
//! beside the polls, so a preemption arrives the moment it is set; the
//! polls stay as the backstop (and watch host maintenance).

use super::{check, Cloud, Notice, NoticeKind};
use std::time::{Duration, Instant};
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

/// How long a GCP hanging GET waits for a change before it is asked again.
pub const GCP_HANG: Duration = Duration::from_secs(30);

/// Watches until `notices` closes. Every notice found is sent, each poll
/// (the receiver decides what is new).
pub async fn watch(settings: WatchSettings, notices: mpsc::Sender<Notice>) {
    let hanging = (settings.cloud == Cloud::Gcp).then(|| {
        tokio::spawn(gcp_preemption(
            settings.base.clone(),
            settings.interval,
            notices.clone(),
        ))
    });
    poll(settings, notices).await;
    if let Some(task) = hanging {
        task.abort();
    }
}

/// GCP's preemption by hanging GET. A server that answers at once without
/// a new ETag (no versioning) is asked once per interval instead.
async fn gcp_preemption(base: String, interval: Duration, notices: mpsc::Sender<Notice>) {
    let mut etag: Option<String> = None;
    loop {
        let started = Instant::now();
        match super::gcp_preempted_wait(&base, etag.as_deref(), GCP_HANG).await {
            Ok((preempted, new_etag)) => {
                if preempted {
                    let notice = Notice {
                        cloud: Cloud::Gcp,
                        kind: NoticeKind::Preempt,
                        deadline: None,
                    };
                    if notices.send(notice).await.is_err() {
                        return;
                    }
                }
                let same = new_etag.is_none() || new_etag == etag;
                etag = new_etag;
                if same {
                    tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "GCP hanging GET failed; asking again");
                etag = None;
                tokio::time::sleep(interval).await;
            }
        }
    }
}

/// Asks the metadata service every interval.
async fn poll(settings: WatchSettings, notices: mpsc::Sender<Notice>) {
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
