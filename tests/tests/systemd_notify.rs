//! Both daemons speak the systemd notify protocol (`Type=notify`): READY
//! once serving, WATCHDOG pings at half of `WATCHDOG_USEC`, STOPPING on
//! SIGTERM, then a clean exit. The test plays systemd: it owns the
//! notification socket.

use flotilla_tests::spot::enrolled_agent;
use flotilla_tests::{AgentProcess, Api, ControllerProcess};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// A notification socket, as systemd provides it.
struct NotifySocket {
    socket: UnixDatagram,
    path: String,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn new() -> anyhow::Result<NotifySocket> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path)?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(NotifySocket {
            socket,
            path: path.display().to_string(),
            _dir: dir,
        })
    }

    /// Every datagram until one contains `needle` (or the time is up).
    fn wait_for(&self, needle: &str, limit: Duration) -> anyhow::Result<Vec<String>> {
        let started = Instant::now();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while started.elapsed() < limit {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = message.contains(needle);
                seen.push(message);
                if found {
                    return Ok(seen);
                }
            }
        }
        anyhow::bail!("no {needle:?} within {limit:?}; got {seen:?}")
    }
}

const WATCHDOG_USEC: &str = "400000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_notifies_ready_pings_the_watchdog_and_says_stopping() -> anyhow::Result<()>
{
    let notify = NotifySocket::new()?;
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(
        dir.path(),
        &[],
        &[
            ("NOTIFY_SOCKET", notify.path.as_str()),
            ("WATCHDOG_USEC", WATCHDOG_USEC),
        ],
    )?;
    let ready = notify.wait_for("READY=1", Duration::from_secs(10))?;
    assert!(
        ready.iter().any(|m| m.contains("STATUS=REST on")),
        "{ready:?}"
    );
    // At least two pings within a watchdog interval and a half.
    notify.wait_for("WATCHDOG=1", Duration::from_millis(600))?;
    notify.wait_for("WATCHDOG=1", Duration::from_millis(600))?;
    let logs = controller.logs.clone();
    let status = controller.terminate()?;
    notify.wait_for("STOPPING=1", Duration::from_secs(5))?;
    assert!(status.success(), "{status}");
    let text = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
    assert!(
        text.contains("store flushed"),
        "the store is flushed on SIGTERM"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_notifies_ready_pings_the_watchdog_and_says_stopping() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(dir.path(), &["--heartbeat", "1"], &[])?;
    let api = Api::admin(&controller.url(""), dir.path()).await?;
    let (agent_dir, _) = enrolled_agent(&api, controller.quic_addr, "i-notify").await?;
    let notify = NotifySocket::new()?;
    let agent = AgentProcess::spawn_env(
        agent_dir.path(),
        &["--runtime", "simulated"],
        &[
            ("NOTIFY_SOCKET", notify.path.as_str()),
            ("WATCHDOG_USEC", WATCHDOG_USEC),
        ],
    )?;
    notify.wait_for("READY=1", Duration::from_secs(10))?;
    notify.wait_for("WATCHDOG=1", Duration::from_millis(600))?;
    notify.wait_for("WATCHDOG=1", Duration::from_millis(600))?;
    agent.wait_log("connected to the controller", Duration::from_secs(20))?;
    let status = agent.terminate()?;
    notify.wait_for("STOPPING=1", Duration::from_secs(5))?;
    assert!(status.success(), "{status}");
    Ok(())
}
