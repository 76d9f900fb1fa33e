//! The template's `container` section, parsed and checked.
//!
//! The controller sends the section as JSON text; this is where it becomes
//! a typed spec. Every problem is reported as one readable sentence, which
//! the agent reports as the container's `start-failure` reason.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// A list given either as a list or as one string split on whitespace
/// (`"httpd -f -p 80"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Words {
    List(Vec<String>),
    Line(String),
}

impl Words {
    /// The argument vector.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Words::List(list) => list.clone(),
            Words::Line(line) => line.split_whitespace().map(str::to_owned).collect(),
        }
    }
}

/// A port: `"8080:80/tcp"`, `"127.0.0.1:8080:80"`, `"80"` or `80`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PortText {
    Number(u16),
    Text(String),
}

/// A parsed port mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub host_ip: Option<String>,
    /// `None`: exposed only, not published.
    pub host_port: Option<u16>,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// A duration: seconds as a number, or `"30s"`, `"2m"`, `"500ms"`, `"1h"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum DurationText {
    Seconds(f64),
    Text(String),
}

/// A size: bytes as a number, or `"256m"`, `"1g"`, `"512k"` (binary units).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SizeText {
    Bytes(u64),
    Text(String),
}

/// Restart policy as written: `"always"`, `"never"`, `"on-failure"`, or
/// `{"policy": "on-failure", "max_attempts": 5}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RestartText {
    Name(String),
    Full {
        policy: String,
        #[serde(default)]
        max_attempts: Option<u32>,
    },
}

/// When to restart a container that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Whatever the exit code; gives up (`app-crashed`) after repeated
    /// quick deaths.
    Always,
    /// Only after a non-zero exit, at most this many times.
    OnFailure {
        max_attempts: u32,
    },
    Never,
}

/// When to pull the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    IfNotPresent,
    Always,
}

/// A health check.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// What a health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// GET `path` on the container's `port`; 2xx/3xx is healthy.
    Http { path: String, port: u16 },
    /// Runs a command in the container; exit code 0 is healthy.
    Command(Vec<String>),
}

/// Registry credentials for the pull.
#[derive(Clone, PartialEq, Eq)]
pub struct Registry {
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The container section as it arrives (JSON).
#[derive(Debug, Deserialize)]
struct Raw {
    image: String,
    #[serde(default)]
    command: Option<Words>,
    #[serde(default)]
    entrypoint: Option<Words>,
    #[serde(default)]
    environment_variables: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    ports: Vec<PortText>,
    #[serde(default)]
    volumes: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    restart: Option<RestartText>,
    #[serde(default)]
    memory: Option<SizeText>,
    #[serde(default)]
    cpus: Option<f64>,
    #[serde(default)]
    stop_grace_period: Option<DurationText>,
    #[serde(default)]
    health_check: Option<RawHealth>,
    #[serde(default)]
    registry: Option<RawRegistry>,
    #[serde(default)]
    pull_policy: Option<String>,
    #[serde(default, rename = "gitRepo")]
    git_repo: Option<String>,
    #[serde(default, rename = "gitReference")]
    git_reference: Option<String>,
    #[serde(default, rename = "gitPrivateKey")]
    git_private_key: Option<String>,
    #[serde(default, rename = "gitKnownHosts")]
    git_known_hosts: Option<String>,
    #[serde(default, rename = "gitTrustOnFirstUse")]
    git_trust_on_first_use: bool,
    #[serde(default, rename = "gitPoll")]
    git_poll: Option<DurationText>,
    #[serde(default, rename = "codeDir")]
    code_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawHealth {
    #[serde(default)]
    http: Option<RawHttp>,
    #[serde(default)]
    command: Option<Words>,
    #[serde(default)]
    interval: Option<DurationText>,
    #[serde(default)]
    timeout: Option<DurationText>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    start_period: Option<DurationText>,
}

#[derive(Debug, Deserialize)]
struct RawHttp {
    #[serde(default = "root")]
    path: String,
    port: u16,
}

fn root() -> String {
    "/".into()
}

#[derive(Deserialize)]
struct RawRegistry {
    #[serde(default)]
    server: Option<String>,
    username: String,
    password: String,
}

impl std::fmt::Debug for RawRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawRegistry { .. }")
    }
}

/// A checked container spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub image: String,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `NAME=value`, sorted by name.
    pub env: Vec<String>,
    pub ports: Vec<Port>,
    pub binds: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub restart: Restart,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub stop_grace: Duration,
    pub health: Option<Health>,
    pub registry: Option<Registry>,
    pub pull: PullPolicy,
    /// Code deployed from git into the container's code directory.
    pub git: Option<Git>,
    /// Where the code is mounted (`codeDir`); when absent, the image's
    /// `com.mobingi.code_dir` label, else `/var/www/html`.
    pub code_dir: Option<String>,
}

/// A code deploy from git.
#[derive(Clone, PartialEq)]
pub struct Git {
    pub repo: String,
    /// Branch, tag or commit (default `master`).
    pub reference: String,
    /// SSH key for the fetch; never logged.
    pub private_key: Option<String>,
    /// `known_hosts` lines the server's host key must match.
    pub known_hosts: Option<String>,
    /// Accept an unknown host key the first time (only when asked).
    pub trust_on_first_use: bool,
    /// Check the reference for new commits this often.
    pub poll: Option<Duration>,
}

impl std::fmt::Debug for Git {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Git")
            .field("repo", &self.repo)
            .field("reference", &self.reference)
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("poll", &self.poll)
            .finish()
    }
}

/// Default stop grace period.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// Longest stop grace period accepted (the Docker client's timeout is
/// longer than this).
pub const MAX_GRACE: Duration = Duration::from_secs(600);

fn duration(text: &DurationText, field: &str) -> Result<Duration, String> {
    let bad = || {
        format!("{field}: {text:?} is not a duration (seconds, or like \"30s\", \"2m\", \"500ms\")")
    };
    match text {
        DurationText::Seconds(secs) if secs.is_finite() && *secs >= 0.0 => {
            Ok(Duration::from_secs_f64(*secs))
        }
        DurationText::Seconds(_) => Err(bad()),
        DurationText::Text(text) => {
            let text = text.trim();
            let (number, unit) = text.split_at(
                text.find(|c: char| c.is_ascii_alphabetic())
                    .unwrap_or(text.len()),
            );
            let value: f64 = number.trim().parse().map_err(|_| bad())?;
            let factor = match unit {
                "" | "s" => 1.0,
                "ms" => 0.001,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            let secs = value * factor;
            if !secs.is_finite() || secs < 0.0 {
                return Err(bad());
            }
            Ok(Duration::from_secs_f64(secs))
        }
    }
}

fn size(text: &SizeText) -> Result<i64, String> {
    let bad = || format!("memory: {text:?} is not a size (bytes, or like \"256m\", \"1g\")");
    let bytes = match text {
        SizeText::Bytes(bytes) => *bytes,
        SizeText::Text(text) => {
            let text = text.trim().to_ascii_lowercase();
            let text = text.trim_end_matches('b').trim_end_matches('i');
            let (number, unit) = text.split_at(
                text.find(|c: char| c.is_ascii_alphabetic())
                    .unwrap_or(text.len()),
            );
            let value: u64 = number.trim().parse().map_err(|_| bad())?;
            let factor: u64 = match unit {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                _ => return Err(bad()),
            };
            value.checked_mul(factor).ok_or_else(bad)?
        }
    };
    if bytes < 6 * 1024 * 1024 {
        return Err(format!(
            "memory: {bytes} bytes is below Docker's 6 MiB minimum"
        ));
    }
    i64::try_from(bytes).map_err(|_| bad())
}

fn port(text: &PortText) -> Result<Port, String> {
    let spec = match text {
        PortText::Number(port) => port.to_string(),
        PortText::Text(text) => text.trim().to_owned(),
    };
    let bad = |why: &str| format!("ports: {spec:?} {why} (expected \"8080:80/tcp\", \"80\" or 80)");
    let (mapping, protocol) = match spec.split_once('/') {
        Some((mapping, protocol)) => (mapping, protocol.to_ascii_lowercase()),
        None => (spec.as_str(), "tcp".to_owned()),
    };
    if protocol != "tcp" && protocol != "udp" {
        return Err(bad("has an unknown protocol"));
    }
    let number = |text: &str| -> Result<u16, String> {
        text.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("has an invalid port number"))
    };
    let parts: Vec<&str> = mapping.rsplitn(3, ':').collect();
    let port = match parts.as_slice() {
        [container] => Port {
            host_ip: None,
            host_port: None,
            container_port: number(container)?,
            protocol,
        },
        [container, host] => Port {
            host_ip: None,
            host_port: Some(number(host)?),
            container_port: number(container)?,
            protocol,
        },
        [container, host, ip] => {
            ip.parse::<std::net::IpAddr>()
                .map_err(|_| bad("has an invalid host address"))?;
            Port {
                host_ip: Some((*ip).to_owned()),
                host_port: Some(number(host)?),
                container_port: number(container)?,
                protocol,
            }
        }
        _ => return Err(bad("is malformed")),
    };
    Ok(port)
}

fn env_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl ContainerSpec {
    /// Parses and checks the container section.
    pub fn parse(json: &str) -> Result<ContainerSpec, String> {
        let raw: Raw =
            serde_json::from_str(json).map_err(|err| format!("container section: {err}"))?;
        let image = raw.image.trim().to_owned();
        if !valid_image_ref(&image) {
            return Err(format!(
                "image {:?} is not a valid image reference",
                raw.image
            ));
        }
        let mut env = Vec::new();
        for (name, value) in &raw.environment_variables {
            if !env_name_ok(name) {
                return Err(format!("environment variable name {name:?} is invalid"));
            }
            let value = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => {
                    return Err(format!(
                    "environment variable {name} must be a string, number or boolean, not {other}"
                ))
                }
            };
            if value.contains('\0') {
                return Err(format!("environment variable {name} contains a NUL byte"));
            }
            env.push(format!("{name}={value}"));
        }
        let ports = raw.ports.iter().map(port).collect::<Result<Vec<_>, _>>()?;
        for bind in &raw.volumes {
            let parts: Vec<&str> = bind.split(':').collect();
            let ok = matches!(parts.as_slice(), [host, container] | [host, container, "ro" | "rw"]
                if !host.is_empty() && container.starts_with('/'));
            if !ok {
                return Err(format!(
                    "volumes: {bind:?} is not \"host-path-or-volume:/container/path[:ro]\""
                ));
            }
        }
        for key in raw.labels.keys() {
            if key.starts_with("flotilla.") {
                return Err(format!(
                    "labels: {key:?} is reserved (flotilla.* labels are the agent's)"
                ));
            }
        }
        let restart = match &raw.restart {
            None => Restart::Always,
            Some(RestartText::Name(name)) => restart_named(name, None)?,
            Some(RestartText::Full {
                policy,
                max_attempts,
            }) => restart_named(policy, *max_attempts)?,
        };
        let stop_grace = raw
            .stop_grace_period
            .as_ref()
            .map(|d| duration(d, "stop_grace_period"))
            .transpose()?
            .unwrap_or(DEFAULT_GRACE);
        if stop_grace > MAX_GRACE {
            return Err(format!(
                "stop_grace_period: at most {} s",
                MAX_GRACE.as_secs()
            ));
        }
        let nano_cpus = match raw.cpus {
            None => None,
            Some(cpus) if cpus.is_finite() && cpus > 0.0 && cpus <= 1024.0 => {
                Some((cpus * 1e9) as i64)
            }
            Some(cpus) => return Err(format!("cpus: {cpus} is not a positive CPU count")),
        };
        let health = raw.health_check.as_ref().map(health).transpose()?;
        let registry = raw.registry.map(|r| Registry {
            server: r.server.unwrap_or_else(|| registry_of(&image)),
            username: r.username,
            password: r.password,
        });
        let pull = match raw.pull_policy.as_deref() {
            None | Some("if-not-present") => PullPolicy::IfNotPresent,
            Some("always") => PullPolicy::Always,
            Some(other) => {
                return Err(format!(
                    "pull_policy: {other:?} is neither \"if-not-present\" nor \"always\""
                ))
            }
        };
        Ok(ContainerSpec {
            image,
            command: raw.command.map(|w| w.argv()),
            entrypoint: raw.entrypoint.map(|w| w.argv()),
            env,
            ports,
            binds: raw.volumes,
            labels: raw.labels,
            restart,
            memory_bytes: raw.memory.as_ref().map(size).transpose()?,
            nano_cpus,
            stop_grace,
            health,
            registry,
            pull,
            git: match raw.git_repo.filter(|r| !r.trim().is_empty()) {
                None => None,
                Some(repo) => Some(Git {
                    repo,
                    reference: raw
                        .git_reference
                        .filter(|r| !r.trim().is_empty())
                        .unwrap_or_else(|| "master".into()),
                    private_key: raw.git_private_key.filter(|k| !k.trim().is_empty()),
                    known_hosts: raw.git_known_hosts.filter(|k| !k.trim().is_empty()),
                    trust_on_first_use: raw.git_trust_on_first_use,
                    poll: raw
                        .git_poll
                        .as_ref()
                        .map(|d| duration(d, "gitPoll"))
                        .transpose()?,
                }),
            },
            code_dir: match raw.code_dir {
                Some(dir) if !dir.starts_with('/') => {
                    return Err(format!("codeDir {dir:?} must be an absolute path"))
                }
                other => other,
            },
        })
    }
}

fn restart_named(name: &str, max_attempts: Option<u32>) -> Result<Restart, String> {
    match name {
        "always" => Ok(Restart::Always),
        "never" | "no" => Ok(Restart::Never),
        "on-failure" => Ok(Restart::OnFailure {
            max_attempts: max_attempts.unwrap_or(5),
        }),
        other => Err(format!(
            "restart: {other:?} is not always, on-failure or never"
        )),
    }
}

fn health(raw: &RawHealth) -> Result<Health, String> {
    let probe = match (&raw.http, &raw.command) {
        (Some(http), None) => {
            if !http.path.starts_with('/') {
                return Err(format!(
                    "health_check.http.path {:?} must start with /",
                    http.path
                ));
            }
            Probe::Http {
                path: http.path.clone(),
                port: http.port,
            }
        }
        (None, Some(command)) if !command.argv().is_empty() => Probe::Command(command.argv()),
        _ => return Err("health_check: give exactly one of http {path, port} or command".into()),
    };
    let get = |d: &Option<DurationText>, field: &str, default: Duration| {
        d.as_ref()
            .map(|d| duration(d, field))
            .transpose()
            .map(|d| d.unwrap_or(default))
    };
    let interval = get(
        &raw.interval,
        "health_check.interval",
        Duration::from_secs(10),
    )?;
    let timeout = get(&raw.timeout, "health_check.timeout", Duration::from_secs(5))?;
    if interval < Duration::from_millis(100) || timeout < Duration::from_millis(100) {
        return Err("health_check: interval and timeout must be at least 100ms".into());
    }
    Ok(Health {
        probe,
        interval,
        timeout,
        retries: raw.retries.unwrap_or(3).max(1),
        start_period: get(
            &raw.start_period,
            "health_check.start_period",
            Duration::ZERO,
        )?,
    })
}

/// Whether `image` is a plausible reference: no whitespace, a lowercase
/// repository (tags may have capitals), no empty parts. The engine has the
/// last word; this catches typos before a pull is tried.
fn valid_image_ref(image: &str) -> bool {
    let name = image.split('@').next().unwrap_or(image);
    let repository = match name.rfind(':') {
        Some(colon) if colon > name.rfind('/').unwrap_or(0) => &name[..colon],
        _ => name,
    };
    !image.is_empty()
        && !image.chars().any(char::is_whitespace)
        && !repository.is_empty()
        && !repository.split('/').any(str::is_empty)
        && repository.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '/' | ':')
        })
}

/// The registry host of an image reference (`docker.io` when none).
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_owned()
        }
        _ => "docker.io".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_spec_parses() {
        let spec = ContainerSpec::parse(
            r#"{
                "image": "localhost:5000/web:1",
                "command": "httpd -f -p 80",
                "environment_variables": {"STAGE": "dev", "PORT": 80, "DEBUG": true},
                "ports": ["8080:80/tcp", 9000, "127.0.0.1:5353:53/udp"],
                "volumes": ["/srv/data:/data:ro", "cache:/cache"],
                "labels": {"team": "web"},
                "restart": {"policy": "on-failure", "max_attempts": 3},
                "memory": "256m",
                "cpus": 0.5,
                "stop_grace_period": "10s",
                "health_check": {"http": {"path": "/health", "port": 80}, "interval": "2s", "retries": 2},
                "registry": {"username": "u", "password": "p"},
                "pull_policy": "always",
                "gitRepo": "ignored here"
            }"#,
        )
        .expect("valid");
        assert_eq!(
            spec.command.as_deref(),
            Some(&["httpd".to_owned(), "-f".into(), "-p".into(), "80".into()][..])
        );
        assert_eq!(spec.env, ["DEBUG=true", "PORT=80", "STAGE=dev"]);
        assert_eq!(
            spec.ports[0],
            Port {
                host_ip: None,
                host_port: Some(8080),
                container_port: 80,
                protocol: "tcp".into()
            }
        );
        assert_eq!(spec.ports[1].host_port, None);
        assert_eq!(spec.ports[2].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(spec.restart, Restart::OnFailure { max_attempts: 3 });
        assert_eq!(spec.memory_bytes, Some(256 << 20));
        assert_eq!(spec.nano_cpus, Some(500_000_000));
        assert_eq!(spec.stop_grace, Duration::from_secs(10));
        let health = spec.health.expect("health");
        assert_eq!(
            health.probe,
            Probe::Http {
                path: "/health".into(),
                port: 80
            }
        );
        assert_eq!(health.interval, Duration::from_secs(2));
        assert_eq!(health.timeout, Duration::from_secs(5));
        let registry = spec.registry.expect("registry");
        assert_eq!(registry.server, "localhost:5000");
        assert!(
            !format!("{registry:?}").contains("\"p\""),
            "the password is never printed"
        );
        assert_eq!(spec.pull, PullPolicy::Always);
    }

    #[test]
    fn defaults_and_refusals() {
        let spec = ContainerSpec::parse(r#"{"image": "web"}"#).expect("minimal");
        assert_eq!(spec.restart, Restart::Always);
        assert_eq!(spec.stop_grace, DEFAULT_GRACE);
        assert_eq!(spec.pull, PullPolicy::IfNotPresent);
        for (json, expected) in [
            (r#"{"image": "bad image"}"#, "not a valid image"),
            (r#"{"image": "Web:1"}"#, "not a valid image"),
            (r#"{"image": "web//x"}"#, "not a valid image"),
            (
                r#"{"image": "web", "environment_variables": {"1X": "y"}}"#,
                "1X",
            ),
            (r#"{"image": "web", "ports": ["80:99999"]}"#, "invalid port"),
            (r#"{"image": "web", "ports": ["80/sctp"]}"#, "protocol"),
            (r#"{"image": "web", "volumes": ["relative"]}"#, "volumes"),
            (
                r#"{"image": "web", "labels": {"flotilla.stack": "x"}}"#,
                "reserved",
            ),
            (r#"{"image": "web", "restart": "sometimes"}"#, "restart"),
            (r#"{"image": "web", "memory": "1k"}"#, "minimum"),
            (r#"{"image": "web", "stop_grace_period": "2h"}"#, "at most"),
            (
                r#"{"image": "web", "health_check": {"retries": 2}}"#,
                "exactly one",
            ),
            (r#"{"image": "web", "pull_policy": "never"}"#, "pull_policy"),
            (r#"{"command": "x"}"#, "image"),
        ] {
            let err = ContainerSpec::parse(json).expect_err(json);
            assert!(err.contains(expected), "{json}: {err}");
        }
    }
}
