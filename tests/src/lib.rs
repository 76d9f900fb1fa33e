//! Harness for end-to-end tests: runs the real Flotilla binaries as child
//! processes on loopback, with their own data dirs, and reads their logs.
//!
//! The binaries are the ones cargo built beside the test executable
//! (`target/<profile>/`); `FLOTILLA_BIN_DIR` overrides that.

use anyhow::{bail, Context};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Directory holding the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLOTILLA_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Path of a workspace binary, checked to exist.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.exists() {
        bail!(
            "{} not found; build the workspace binaries first (cargo build --workspace --bins)",
            path.display()
        );
    }
    Ok(path)
}

/// A running `flotilla-controller` process.
pub struct ControllerProcess {
    child: Child,
    /// Where the REST API listens.
    pub addr: SocketAddr,
    /// Where the fleet endpoint listens.
    pub quic_addr: SocketAddr,
    /// `sha256:...` of the fleet CA.
    pub ca_fingerprint: String,
    /// Every log line (JSON) it has written so far.
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl ControllerProcess {
    /// Starts the controller with `--data-dir dir --listen 127.0.0.1:0` plus
    /// `args` and `env`, and waits until it says it is ready.
    pub fn spawn(
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<ControllerProcess> {
        let mut command = Command::new(binary("flotilla-controller")?);
        command
            .arg("--data-dir")
            .arg(dir)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--quic-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(args)
            .env("RUST_LOG", "debug")
            .env_remove("FLOTILLA_BOOTSTRAP_CLIENT_ID")
            .env_remove("FLOTILLA_BOOTSTRAP_CLIENT_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .context("cannot start flotilla-controller")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    if value["message"] == "controller ready" {
                        let field = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
                        let _ = ready_tx.send((
                            field("listen"),
                            field("quic_listen"),
                            field("ca_fingerprint"),
                        ));
                    }
                }
                if let Ok(mut logs) = sink.lock() {
                    logs.push(line);
                }
            }
        });
        let (addr, quic_addr, ca_fingerprint) = match ready_rx.recv_timeout(Duration::from_secs(20))
        {
            Ok((addr, quic, fingerprint)) => (
                addr.parse().context("ready line has no address")?,
                quic.parse().context("ready line has no QUIC address")?,
                fingerprint,
            ),
            Err(_) => {
                let _ = child.kill();
                let logs = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
                bail!("controller did not become ready:\n{logs}");
            }
        };
        Ok(ControllerProcess {
            child,
            addr,
            quic_addr,
            ca_fingerprint,
            logs,
        })
    }

    /// Base URL of the REST API.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// All log output so far, one line per entry.
    pub fn log_text(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status.
    pub fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        signal(self.child.id(), "TERM")?;
        wait(&mut self.child, Duration::from_secs(20))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

fn wait(child: &mut Child, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            bail!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a `flotilla-controller` subcommand to completion; returns
/// (success, stdout, stderr).
pub fn controller_command(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<(bool, String, String)> {
    let mut command = Command::new(binary("flotilla-controller")?);
    command
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output()?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// Reads the admin credentials the controller wrote on first start.
pub fn admin_credentials(dir: &Path) -> anyhow::Result<(String, String)> {
    let value: Value = serde_json::from_slice(&std::fs::read(dir.join("admin-credentials.json"))?)?;
    Ok((
        value["client_id"].as_str().context("client_id")?.to_owned(),
        value["client_secret"]
            .as_str()
            .context("client_secret")?
            .to_owned(),
    ))
}

/// Gets an access token with client credentials.
pub async fn token(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    secret: &str,
) -> anyhow::Result<String> {
    let reply: Value = http
        .post(format!("{base}/v3/access_token"))
        .json(&serde_json::json!({"grant_type": "client_credentials", "client_id": id, "client_secret": secret}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(reply["access_token"]
        .as_str()
        .context("no access_token")?
        .to_owned())
}
