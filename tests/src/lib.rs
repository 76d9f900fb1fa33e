//! Harness for end-to-end tests: runs the real Flotilla binaries as child
//! processes on loopback, with their own data dirs, and reads their logs.
//!
//! The binaries are the ones cargo built beside the test executable
//! (`target/<profile>/`); `FLOTILLA_BIN_DIR` overrides that.

pub mod hostile;
pub mod metadata;
pub mod spot;
pub mod system;

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
    // target/<profile>/deps/<test> or target/<profile>/<bin> -> target/<profile>
    let parent = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if parent.file_name().is_some_and(|name| name == "deps") {
        parent.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        parent
    }
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

/// Collects a child's standard error, line by line, on a thread; `watch`
/// sees each line first.
fn capture_logs(
    child: &mut Child,
    mut watch: impl FnMut(&str) + Send + 'static,
) -> anyhow::Result<Arc<Mutex<Vec<String>>>> {
    let stderr = child.stderr.take().context("no stderr")?;
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            watch(&line);
            if let Ok(mut logs) = sink.lock() {
                logs.push(line);
            }
        }
    });
    Ok(logs)
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
        command.arg("--data-dir").arg(dir);
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        if !args.contains(&"--quic-listen") {
            command.args(["--quic-listen", "127.0.0.1:0"]);
        }
        command
            .args(["--log-format", "json"])
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
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let logs = capture_logs(&mut child, move |line| {
            if let Ok(value) = serde_json::from_str::<Value>(line) {
                if value["message"] == "controller ready" {
                    let field = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
                    let _ = ready_tx.send((
                        field("listen"),
                        field("quic_listen"),
                        field("ca_fingerprint"),
                    ));
                }
            }
        })?;
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

    /// The process id (for RSS readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Base URL of the REST API.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The REST API's URL when it serves HTTPS.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
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

/// A running `flotilla-agent run` process.
pub struct AgentProcess {
    child: Child,
    /// Every log line (JSON) it has written so far.
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl AgentProcess {
    /// Starts `flotilla-agent --data-dir dir run --runtime simulated` plus
    /// `args`.
    pub fn spawn(dir: &Path, args: &[&str]) -> anyhow::Result<AgentProcess> {
        let mut all = vec!["--runtime", "simulated"];
        all.extend_from_slice(args);
        Self::spawn_with(dir, &all)
    }

    /// Starts `flotilla-agent --data-dir dir run` plus `args` (the Docker
    /// runtime unless `args` say otherwise).
    pub fn spawn_with(dir: &Path, args: &[&str]) -> anyhow::Result<AgentProcess> {
        Self::spawn_env(dir, args, &[])
    }

    /// Like [`AgentProcess::spawn_with`], with extra environment variables.
    pub fn spawn_env(
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<AgentProcess> {
        let mut child = Command::new(binary("flotilla-agent")?)
            .arg("--data-dir")
            .arg(dir)
            .args(["--log-format", "json", "run", "--max-backoff", "1"])
            .args(args)
            .env("RUST_LOG", "debug")
            // No cloud unless a test names one (`--cloud` wins over this).
            .env("FLOTILLA_AGENT_CLOUD", "none")
            // Many agents share this host: metrics only where a test asks.
            .env("FLOTILLA_AGENT_METRICS_LISTEN", "off")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start flotilla-agent")?;
        let logs = capture_logs(&mut child, |_| {})?;
        Ok(AgentProcess { child, logs })
    }

    /// All log output so far.
    pub fn log_text(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// The process id (for RSS and CPU readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.log_text().contains(needle) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("agent never logged {needle:?}:\n{}", self.log_text())
    }

    /// SIGTERM and wait.
    pub fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        signal(self.child.id(), "TERM")?;
        wait(&mut self.child, Duration::from_secs(20))
    }

    /// SIGKILL.
    pub fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a `flotilla-agent` subcommand to completion; returns (success,
/// stdout, stderr).
pub fn agent_command(dir: &Path, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let output = Command::new(binary("flotilla-agent")?)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// Enrolls an agent data dir; returns (success, stdout, stderr).
pub fn enroll(
    dir: &Path,
    controller: SocketAddr,
    token: &str,
    fingerprint: &str,
    instance_id: &str,
) -> anyhow::Result<(bool, String, String)> {
    agent_command(
        dir,
        &[
            "--instance-id",
            instance_id,
            "enroll",
            "--controller",
            &controller.to_string(),
            "--join-token",
            token,
            "--ca-fingerprint",
            fingerprint,
        ],
    )
}

/// A REST client logged in as a controller's admin.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    /// Logs in with the admin credentials of `dir`.
    pub async fn admin(base: &str, dir: &Path) -> anyhow::Result<Api> {
        Self::admin_with(reqwest::Client::new(), base, dir).await
    }

    /// Like [`Api::admin`] with a client of the caller's (one that trusts
    /// the fleet CA, for a controller serving HTTPS).
    pub async fn admin_with(http: reqwest::Client, base: &str, dir: &Path) -> anyhow::Result<Api> {
        let (id, secret) = admin_credentials(dir)?;
        let token = token(&http, base, &id, &secret).await?;
        Ok(Api {
            http,
            base: base.to_owned(),
            token,
        })
    }

    /// Creates an API client for `username` (as this admin) and logs in
    /// with it.
    pub async fn user(&self, username: &str) -> anyhow::Result<Api> {
        let (status, client) = self
            .call(
                reqwest::Method::POST,
                "/v3/admin/clients",
                Some(&serde_json::json!({ "username": username })),
            )
            .await?;
        if status != 201 {
            bail!("client for {username}: {status} {client}");
        }
        let id = client["client_id"].as_str().context("client_id")?;
        let secret = client["client_secret"].as_str().context("client_secret")?;
        let token = token(&self.http, &self.base, id, secret).await?;
        Ok(Api {
            http: self.http.clone(),
            base: self.base.clone(),
            token,
        })
    }

    /// Replaces a pool's container policy (as an admin), keeping its users.
    pub async fn set_pool_policy(&self, pool: &str, policy: Value) -> anyhow::Result<()> {
        let path = format!("/v3/alm/pools/{pool}");
        let current = self.get(&path).await?;
        let body = serde_json::json!({ "users": current["users"], "policy": policy });
        let (status, reply) = self.call(reqwest::Method::PUT, &path, Some(&body)).await?;
        if status != 200 {
            bail!("pool {pool} policy: {status} {reply}");
        }
        Ok(())
    }

    /// Sends a request; returns (status, JSON body or Null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await?;
        if status != 200 {
            bail!("GET {path}: {status} {body}");
        }
        Ok(body)
    }

    /// Every container status reported for a stack, oldest first, as
    /// (status, reason).
    pub async fn container_reports(&self, stack: &str) -> anyhow::Result<Vec<(String, String)>> {
        let events = self
            .get(&format!(
                "/v3/events?stack_id={stack}&type=container.status"
            ))
            .await?;
        Ok(events
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|e| {
                        let field = |k: &str| e["data"][k].as_str().unwrap_or_default().to_owned();
                        (field("status"), field("reason"))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Creates a join token; returns (token, CA fingerprint).
    pub async fn join_token(&self, body: Value) -> anyhow::Result<(String, String)> {
        let (status, reply) = self
            .call(
                reqwest::Method::POST,
                "/v3/alm/agent/join-token",
                Some(&body),
            )
            .await?;
        if status != 201 {
            bail!("join token: {status} {reply}");
        }
        Ok((
            reply["token"].as_str().context("token")?.to_owned(),
            reply["ca_fingerprint"]
                .as_str()
                .context("fingerprint")?
                .to_owned(),
        ))
    }

    /// Applies a template; returns the stack id.
    pub async fn apply(&self, template: &Value) -> anyhow::Result<String> {
        let (status, reply) = self
            .call(reqwest::Method::POST, "/v3/alm/template", Some(template))
            .await?;
        if status != 201 {
            bail!("apply: {status} {reply}");
        }
        Ok(reply["template_id"]
            .as_str()
            .context("template_id")?
            .to_owned())
    }

    /// Updates a template; returns the new version id.
    pub async fn update(&self, stack: &str, template: &Value) -> anyhow::Result<String> {
        let (status, reply) = self
            .call(
                reqwest::Method::PUT,
                &format!("/v3/alm/template/{stack}"),
                Some(template),
            )
            .await?;
        if status != 202 {
            bail!("update: {status} {reply}");
        }
        Ok(reply["version_id"]
            .as_str()
            .context("version_id")?
            .to_owned())
    }

    /// Polls until `check` accepts the JSON at `path`.
    pub async fn wait_for(
        &self,
        path: &str,
        limit: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let started = Instant::now();
        let mut last = Value::Null;
        while started.elapsed() < limit {
            if let Ok(value) = self.get(path).await {
                if check(&value) {
                    return Ok(value);
                }
                last = value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{path} never matched; last: {last}")
    }
}

/// A template whose one configuration wants `count` instances.
pub fn web_template(count: u64, label: &str) -> Value {
    serde_json::json!({
        "version": "2017-03-03",
        "label": label,
        "configurations": [{
            "role": "web", "flag": "Web01",
            "provision": {"instance_count": count},
            "container": {"image": "flotilla-test/web:1", "environment_variables": {"LABEL": label}}
        }]
    })
}

/// A UDP relay between agents and the controller that can drop everything
/// (a network partition on loopback).
pub struct UdpRelay {
    /// Agents dial this.
    pub addr: SocketAddr,
    blocked: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl UdpRelay {
    /// Relays to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<UdpRelay> {
        let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
        let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
        back.connect(target).await?;
        let addr = front.local_addr()?;
        let blocked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let (f, b, flag, who) = (front.clone(), back.clone(), blocked.clone(), client.clone());
        let up = async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = f.recv_from(&mut buf).await {
                if let Ok(mut who) = who.lock() {
                    *who = Some(from);
                }
                if !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = b.send(&buf[..n]).await;
                }
            }
        };
        let (f, b, flag) = (front, back, blocked.clone());
        let down = async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = b.recv(&mut buf).await {
                let to = client.lock().ok().and_then(|who| *who);
                if let (Some(to), false) = (to, flag.load(std::sync::atomic::Ordering::Relaxed)) {
                    let _ = f.send_to(&buf[..n], to).await;
                }
            }
        };
        let task = tokio::spawn(async move {
            tokio::join!(up, down);
        });
        Ok(UdpRelay {
            addr,
            blocked,
            task,
        })
    }

    /// Drops (true) or passes (false) every packet from now on.
    pub fn set_blocked(&self, blocked: bool) {
        self.blocked
            .store(blocked, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Builds the example web image under `tag` (once per tag and process).
pub fn ensure_image(tag: &str) -> anyhow::Result<()> {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    if built.iter().any(|t| t == tag) {
        return Ok(());
    }
    system::tool("/bin/busybox", "busybox-static")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/build-image");
    let output = Command::new(&script)
        .arg(tag)
        .output()
        .context("cannot run examples/build-image")?;
    if !output.status.success() {
        bail!(
            "building {tag} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    built.push(tag.to_owned());
    Ok(())
}

/// Builds `flotilla-test/udp-echo:1` (once per process): the tests'
/// `udp_echo` binary and the shared libraries it loads, on an empty image,
/// serving UDP port 5353.
pub fn ensure_udp_echo_image() -> anyhow::Result<&'static str> {
    const TAG: &str = "flotilla-test/udp-echo:1";
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    if *built {
        return Ok(TAG);
    }
    let binary = binary("udp_echo")?;
    let context = tempfile::tempdir()?;
    std::fs::copy(&binary, context.path().join("udp_echo"))?;
    let ldd = Command::new("ldd")
        .arg(&binary)
        .output()
        .context("cannot run ldd")?;
    let mut copies = Vec::new();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line
            .split("=>")
            .last()
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(path) = path {
            let inside = context
                .path()
                .join("root")
                .join(path.trim_start_matches('/'));
            if let Some(dir) = inside.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::copy(path, &inside)?;
            copies.push(path.to_owned());
        }
    }
    anyhow::ensure!(!copies.is_empty(), "ldd named no libraries");
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY root/ /\nCOPY udp_echo /udp_echo\nEXPOSE 5353/udp\nCMD [\"/udp_echo\", \"5353\"]\n",
    )?;
    let context_path = context.path().to_string_lossy().into_owned();
    docker(&["build", "-q", "-t", TAG, &context_path])?;
    *built = true;
    Ok(TAG)
}

/// Runs a `docker` command; returns its standard output.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .context("cannot run docker")?;
    if !output.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Ids of the containers an agent manages (running or not).
pub fn agent_containers(agent_id: &str) -> anyhow::Result<Vec<String>> {
    docker_ids(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=flotilla.agent={agent_id}"),
    ])
}

/// The ids a `docker ... -q` listing prints, one per line.
pub fn docker_ids(args: &[&str]) -> anyhow::Result<Vec<String>> {
    Ok(docker(args)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Ids of the per-stack networks an agent made.
pub fn agent_networks(agent_id: &str) -> anyhow::Result<Vec<String>> {
    docker_ids(&[
        "network",
        "ls",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=flotilla.agent={agent_id}"),
    ])
}

/// Removes an agent's containers and networks when dropped (a failed test
/// leaves none).
pub struct ContainerSweep(pub String);

impl Drop for ContainerSweep {
    fn drop(&mut self) {
        if let Ok(ids) = agent_containers(&self.0) {
            for id in ids {
                let _ = docker(&["rm", "-f", &id]);
            }
        }
        if let Ok(ids) = agent_networks(&self.0) {
            for id in ids {
                let _ = docker(&["network", "rm", &id]);
            }
        }
        // The agent's host-port routes outlive it by design; not the test.
        let table = flotilla_agent::traffic::rules::table_name(&self.0);
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &table])
            .output();
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A controller and one agent on the real Docker engine, with its own
/// network and its containers removed when dropped.
pub struct DockerFleet {
    pub controller: ControllerProcess,
    pub api: Api,
    pub agent_dir: tempfile::TempDir,
    pub agent: Option<AgentProcess>,
    pub agent_id: String,
    /// The agent's Docker network (one per fleet, so parallel tests never
    /// race to create the same one).
    pub network: String,
    _sweep: ContainerSweep,
    _dir: tempfile::TempDir,
}

impl DockerFleet {
    /// Starts a controller (with `controller_args`), enrolls an agent as
    /// `instance` and runs it with the Docker runtime on the network
    /// `flotilla-test-<instance>`. `controller_env` sets controller variables.
    pub async fn start(
        instance: &str,
        controller_args: &[&str],
        controller_env: &[(&str, &str)],
    ) -> anyhow::Result<DockerFleet> {
        DockerFleet::start_with(instance, controller_args, controller_env, &[]).await
    }

    /// [`DockerFleet::start`] with more arguments for the agent.
    pub async fn start_with(
        instance: &str,
        controller_args: &[&str],
        controller_env: &[(&str, &str)],
        agent_args: &[&str],
    ) -> anyhow::Result<DockerFleet> {
        let dir = tempfile::tempdir()?;
        let controller = ControllerProcess::spawn(dir.path(), controller_args, controller_env)?;
        let api = Api::admin(&controller.url(""), dir.path()).await?;
        let agent_dir = tempfile::tempdir()?;
        let (token, fingerprint) = api.join_token(serde_json::json!({})).await?;
        let (ok, out, err) = enroll(
            agent_dir.path(),
            controller.quic_addr,
            &token,
            &fingerprint,
            instance,
        )?;
        anyhow::ensure!(ok, "{out}{err}");
        let agent_id = out.split_whitespace().nth(2).unwrap_or_default().to_owned();
        let network = format!("flotilla-test-{instance}");
        let mut args = vec!["--docker-network", network.as_str()];
        args.extend_from_slice(agent_args);
        let agent = AgentProcess::spawn_with(agent_dir.path(), &args)?;
        agent.wait_log("connected to the controller", Duration::from_secs(20))?;
        Ok(DockerFleet {
            controller,
            api,
            agent_dir,
            agent: Some(agent),
            _sweep: ContainerSweep(agent_id.clone()),
            agent_id,
            network,
            _dir: dir,
        })
    }
}

impl DockerFleet {
    /// Starts the fleet's agent again (the one before must be stopped),
    /// with `extra` arguments.
    pub fn restart_agent(&self, extra: &[&str]) -> anyhow::Result<AgentProcess> {
        let mut args = vec!["--docker-network", self.network.as_str()];
        args.extend_from_slice(extra);
        AgentProcess::spawn_with(self.agent_dir.path(), &args)
    }
}

/// Opens a control connection with an enrolled agent's identity, to speak
/// the protocol by hand.
pub async fn raw_connection(
    identity_dir: &std::path::Path,
    controller: std::net::SocketAddr,
) -> anyhow::Result<(quinn::Endpoint, quinn::Connection)> {
    let identity = flotilla_agent::identity::Identity::load(identity_dir)?;
    let config = flotilla_agent::tls::control_config(
        &identity,
        Duration::from_secs(5),
        Duration::from_secs(30),
        true,
    )?;
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let connection = endpoint
        .connect_with(config, controller, flotilla_common::wire::CONTROLLER_NAME)?
        .await?;
    Ok((endpoint, connection))
}

/// Scrapes an OpenMetrics endpoint: each sample's name (with labels) and
/// value.
pub async fn scrape_metrics(url: &str) -> anyhow::Result<std::collections::HashMap<String, f64>> {
    let response = reqwest::get(url).await?;
    anyhow::ensure!(response.status() == 200, "{url}: {}", response.status());
    let text = response.text().await?;
    anyhow::ensure!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (name, value) = line
                .rsplit_once(' ')
                .context("a sample is name and value")?;
            Ok((
                name.to_owned(),
                value.parse().context("a sample's value is a number")?,
            ))
        })
        .collect()
}

/// A memory figure of a process from `/proc/<pid>/status` (`VmRSS:`,
/// `VmHWM:`), in KiB; 0 when it cannot be read.
pub fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
