//! Agent configuration: command line, then `FLOTILLA_AGENT_*` variables,
//! then an optional TOML file (`--config`), then defaults.

use crate::runtime::RuntimeKind;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the agent keeps its identity and state unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "./flotilla-agent-data";

/// Settings every subcommand shares.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Common {
    /// Optional TOML configuration file.
    #[arg(long, env = "FLOTILLA_AGENT_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Directory for the identity (keys 0600) and the state store.
    #[arg(long, env = "FLOTILLA_AGENT_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// This VM's instance id (default: the cloud's, else the hostname).
    #[arg(long, env = "FLOTILLA_AGENT_INSTANCE_ID", global = true)]
    pub instance_id: Option<String>,
    /// Which cloud's metadata service to watch for spot notices and to ask
    /// for the instance id, type and lifecycle (default: auto).
    #[arg(long, env = "FLOTILLA_AGENT_CLOUD", global = true)]
    pub cloud: Option<CloudChoice>,
    /// The metadata service's base URL (default: the cloud's own).
    #[arg(long, env = "FLOTILLA_AGENT_METADATA_URL", global = true)]
    pub metadata_url: Option<String>,
}

/// `--cloud` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudChoice {
    Aws,
    Gcp,
    Azure,
    /// No cloud: no notices, no metadata.
    None,
    /// Ask each cloud's metadata service at start (at most a second).
    Auto,
}

impl CloudChoice {
    /// The cloud, when one was named.
    pub fn named(self) -> Option<crate::spot::Cloud> {
        match self {
            CloudChoice::Aws => Some(crate::spot::Cloud::Aws),
            CloudChoice::Gcp => Some(crate::spot::Cloud::Gcp),
            CloudChoice::Azure => Some(crate::spot::Cloud::Azure),
            CloudChoice::None | CloudChoice::Auto => None,
        }
    }
}

/// Default address of the agent's metrics.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9110";

/// The metrics address, or `None` for `off`.
pub fn metrics_listen(text: &str) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.trim()
        .parse()
        .map(Some)
        .map_err(|_| ConfigError::Invalid {
            key: "metrics_listen",
            reason: format!("{text:?} is not ADDR:PORT or off"),
        })
}

/// Parses an interval: `500ms`, `1s`, `1.5s`, `2m`, or bare seconds.
pub fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 1s or 500ms"))?;
    let millis = match unit {
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        _ => return Err(format!("{text:?}: the unit is ms, s or m")),
    };
    if !(100.0..=60_000.0).contains(&millis) {
        return Err(format!("{text:?} is outside 100ms..60s"));
    }
    Ok(std::time::Duration::from_millis(millis as u64))
}

/// `enroll` settings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EnrollArgs {
    /// The controller's fleet endpoint, `HOST:PORT`.
    #[arg(long, env = "FLOTILLA_AGENT_CONTROLLER")]
    pub controller: Option<String>,
    /// The join token from `POST /v3/alm/agent/join-token`.
    #[arg(long, env = "FLOTILLA_AGENT_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// The fleet CA's fingerprint (`sha256:...`) to trust the controller by.
    #[arg(long, env = "FLOTILLA_AGENT_CA_FINGERPRINT")]
    pub ca_fingerprint: Option<String>,
    /// Or the fleet CA certificate itself (PEM or DER).
    #[arg(long, env = "FLOTILLA_AGENT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// `run` settings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// Labels (`key=value`, repeatable), e.g. `lifecycle=spot`,
    /// `instance_type=t3.small`. Override what the agent detects.
    #[arg(long = "label", env = "FLOTILLA_AGENT_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// What runs the containers.
    #[arg(long, env = "FLOTILLA_AGENT_RUNTIME")]
    pub runtime: Option<RuntimeKind>,
    /// Largest fleet-link frame accepted, in bytes.
    #[arg(long, env = "FLOTILLA_AGENT_MAX_FRAME")]
    pub max_frame: Option<usize>,
    /// Longest wait between reconnect attempts, in seconds.
    #[arg(long, env = "FLOTILLA_AGENT_MAX_BACKOFF")]
    pub max_backoff: Option<u64>,
    /// Turn off UDP segmentation offload (for NICs that reject it).
    #[arg(long, env = "FLOTILLA_AGENT_QUIC_DISABLE_GSO")]
    pub quic_disable_gso: bool,
    /// The Docker engine's socket.
    #[arg(long, env = "FLOTILLA_AGENT_DOCKER_SOCKET")]
    pub docker_socket: Option<String>,
    /// The shared Docker network of containers created before each stack
    /// got its own (they stay on it until their next update).
    #[arg(long, env = "FLOTILLA_AGENT_DOCKER_NETWORK")]
    pub docker_network: Option<String>,
    /// Who publishes containers' host ports: `nftables` (the agent's own
    /// table, the default: updates switch traffic without dropping a
    /// request) or `docker` (Docker's port bindings).
    #[arg(long, env = "FLOTILLA_AGENT_PUBLISHED_PORTS")]
    pub published_ports: Option<crate::traffic::PortMode>,
    /// Seconds before containers no desired state wants are removed.
    #[arg(long, env = "FLOTILLA_AGENT_ORPHAN_GRACE")]
    pub orphan_grace: Option<u64>,
    /// Seconds between clean-ups (stopped containers, unused stack
    /// networks, unused images the agent pulled); default 600.
    #[arg(long, env = "FLOTILLA_AGENT_CLEANUP_INTERVAL", value_parser = clap::value_parser!(u64).range(1..))]
    pub cleanup_interval: Option<u64>,
    /// Seconds an image the agent pulled must have gone unused before a
    /// clean-up removes it; default 86400.
    #[arg(long, env = "FLOTILLA_AGENT_IMAGE_PRUNE_AGE")]
    pub image_prune_age: Option<u64>,
    /// How often to ask the metadata service for a spot notice (`1s`,
    /// `500ms`; 100ms..60s).
    #[arg(long, env = "FLOTILLA_AGENT_SPOT_POLL_INTERVAL", value_parser = parse_interval)]
    pub spot_poll_interval: Option<std::time::Duration>,
    /// Where to serve Prometheus metrics (`ADDR:PORT`, or `off`; default
    /// `127.0.0.1:9110`).
    #[arg(long, env = "FLOTILLA_AGENT_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

/// Keys of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub instance_id: Option<String>,
    pub controller: Option<String>,
    pub ca_fingerprint: Option<String>,
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub runtime: Option<RuntimeKind>,
    pub max_frame: Option<usize>,
    pub max_backoff: Option<u64>,
    pub quic_disable_gso: Option<bool>,
    pub docker_socket: Option<String>,
    pub docker_network: Option<String>,
    pub orphan_grace: Option<u64>,
    pub cleanup_interval: Option<u64>,
    pub image_prune_age: Option<u64>,
    pub published_ports: Option<crate::traffic::PortMode>,
    pub cloud: Option<CloudChoice>,
    pub metadata_url: Option<String>,
    pub spot_poll_interval: Option<String>,
    pub metrics_listen: Option<String>,
    /// Log level or filter (`--log-level` and `RUST_LOG` win).
    pub log_level: Option<String>,
}

/// A configuration problem, named.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("invalid setting {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Reads the optional file.
pub fn read_file(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::File {
        path: path.display().to_string(),
        reason: err.to_string(),
    })?;
    toml::from_str(&text).map_err(|err| ConfigError::File {
        path: path.display().to_string(),
        reason: err.to_string(),
    })
}

/// The data dir from flags, file or default.
pub fn data_dir(common: &Common, file: &FileConfig) -> PathBuf {
    common
        .data_dir
        .clone()
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

/// Parses `key=value` labels over the file's labels.
pub fn labels(args: &[String], file: &FileConfig) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut labels = file.labels.clone();
    for label in args.iter().filter(|l| !l.is_empty()) {
        let (key, value) = label.split_once('=').ok_or_else(|| ConfigError::Invalid {
            key: "label",
            reason: format!("{label:?} is not key=value"),
        })?;
        let key = key.trim();
        let ok = !key.is_empty()
            && key.len() <= 63
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        if !ok || value.len() > 253 {
            return Err(ConfigError::Invalid {
                key: "label",
                reason: format!("{label:?}: keys are 1-63 letters, digits, '-', '_', '.', '/'; values at most 253 bytes"),
            });
        }
        labels.insert(key.to_owned(), value.trim().to_owned());
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_packaged_configuration_parses() {
        let file: FileConfig = toml::from_str(include_str!("../../packaging/agent.toml"))
            .expect("packaging/agent.toml is valid");
        assert_eq!(file.cloud, Some(CloudChoice::Auto));
        assert_eq!(
            metrics_listen(file.metrics_listen.as_deref().unwrap_or_default())
                .expect("address")
                .map(|a| a.to_string()),
            Some(DEFAULT_METRICS_LISTEN.to_owned())
        );
        assert!(parse_interval(file.spot_poll_interval.as_deref().unwrap_or_default()).is_ok());
    }

    use super::*;

    #[test]
    fn intervals_parse_with_units_and_bounds() {
        use std::time::Duration;
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_interval("10ms").is_err());
        assert!(parse_interval("2h").is_err());
        assert!(parse_interval("soon").is_err());
    }

    #[test]
    fn labels_merge_and_refuse_garbage() {
        let file = FileConfig {
            labels: BTreeMap::from([
                ("zone".to_owned(), "a".to_owned()),
                ("lifecycle".to_owned(), "spot".to_owned()),
            ]),
            ..FileConfig::default()
        };
        let merged = labels(
            &[
                "lifecycle=on-demand".into(),
                "instance_type=t3.small".into(),
            ],
            &file,
        )
        .expect("labels");
        assert_eq!(merged["lifecycle"], "on-demand");
        assert_eq!(merged["zone"], "a");
        assert_eq!(merged["instance_type"], "t3.small");
        assert!(labels(&["novalue".into()], &file).is_err());
        assert!(labels(&["bad key=x".into()], &file).is_err());
    }
}
