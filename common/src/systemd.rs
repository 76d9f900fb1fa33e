//! The systemd service protocol (`Type=notify`): say when the daemon is
//! ready and when it stops, and ping the watchdog while the daemon is
//! healthy. Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::time::Duration;

/// Tells systemd the daemon is ready, with a one-line status.
pub fn ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Tells systemd the daemon is shutting down.
pub fn stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}

/// The watchdog interval systemd asked for (`WatchdogSec=`), if any: as
/// `sd_watchdog_enabled(3)` reads it, `WATCHDOG_USEC`, for this process
/// when `WATCHDOG_PID` names it or is unset.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog at half its interval while `healthy` says so; a
/// daemon that hangs or reports itself unhealthy gets restarted by systemd.
/// Returns `None` when no watchdog is configured.
pub fn spawn_watchdog<F, Fut>(healthy: F) -> Option<tokio::task::JoinHandle<()>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let interval = watchdog_interval()?;
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog enabled"
    );
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tick.tick().await;
            if healthy().await {
                notify(&[sd_notify::NotifyState::Watchdog]);
            } else {
                tracing::error!("unhealthy: withholding the watchdog ping");
            }
        }
    }))
}
