//! Controller configuration: command line, then `FLOTILLA_*` variables, then
//! an optional TOML file, then defaults, in that order of precedence.
//! [`Config::load`] merges them and [`Config::validate`] refuses nonsense
//! before anything starts listening.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the controller keeps its state unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "./flotilla-data";
/// The REST API's default address.
pub const DEFAULT_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 8080);
/// Largest request body accepted by default (1 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Lifetime of an access token, as in the Mobingi API (`expires_in: 43200`).
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 43_200;
/// Largest container section of one configuration by default (256 KiB).
pub const DEFAULT_MAX_CONTAINER_SECTION: usize = 256 * 1024;
/// The fleet endpoint's default address.
pub const DEFAULT_QUIC_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 4433);

/// Settings as given on the command line or in the environment; `None` means
/// "not given here", so the file and the defaults can fill in.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Optional TOML configuration file.
    #[arg(long, env = "FLOTILLA_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Directory holding the store, the admin credentials and (later) keys.
    #[arg(long, env = "FLOTILLA_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Address of the REST API.
    #[arg(long, env = "FLOTILLA_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "FLOTILLA_BODY_LIMIT", global = true)]
    pub body_limit: Option<usize>,
    /// Largest container section of one configuration, in bytes of
    /// compact JSON (default 256 KiB).
    #[arg(long, env = "FLOTILLA_MAX_CONTAINER_SECTION", global = true)]
    pub max_container_section: Option<usize>,
    /// Access token lifetime in seconds.
    #[arg(long, env = "FLOTILLA_TOKEN_TTL", global = true)]
    pub token_ttl: Option<u64>,
    /// Address of the QUIC fleet endpoint agents dial.
    #[arg(long, env = "FLOTILLA_QUIC_LISTEN", global = true)]
    pub quic_listen: Option<SocketAddr>,
    /// Seconds of silence after which an agent is marked lost.
    #[arg(long, env = "FLOTILLA_AGENT_LOST_AFTER", global = true)]
    pub agent_lost_after: Option<u64>,
    /// Seconds a lost agent keeps its placements before they move.
    #[arg(long, env = "FLOTILLA_REPLACE_AFTER", global = true)]
    pub replace_after: Option<u64>,
    /// Seconds a stack waits for enough agents before it is marked failed.
    #[arg(long, env = "FLOTILLA_PLACEMENT_TIMEOUT", global = true)]
    pub placement_timeout: Option<u64>,
    /// Seconds between agent heartbeats.
    #[arg(long, env = "FLOTILLA_HEARTBEAT", global = true)]
    pub heartbeat: Option<u64>,
    /// Largest fleet-link frame, in bytes.
    #[arg(long, env = "FLOTILLA_MAX_FRAME", global = true)]
    pub max_frame: Option<usize>,
    /// Turn off UDP segmentation offload (for NICs that reject it).
    #[arg(long, env = "FLOTILLA_QUIC_DISABLE_GSO", global = true)]
    pub quic_disable_gso: bool,
    /// The REST API's URL as agents reach it (`http://host:port`), for their
    /// spot-notice fallback. Default: the address the API is bound to,
    /// unless it is a wildcard.
    #[arg(long, env = "FLOTILLA_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Drain an agent when its cloud recommends a rebalance (AWS), not only
    /// on a termination notice.
    #[arg(long, env = "FLOTILLA_DRAIN_ON_REBALANCE", global = true)]
    pub drain_on_rebalance: bool,
    /// Days events and finished webhook deliveries are kept (0: forever;
    /// default 30).
    #[arg(long, env = "FLOTILLA_EVENT_RETENTION_DAYS", global = true)]
    pub event_retention_days: Option<u64>,
    /// Serve the REST API over HTTPS with this certificate chain (PEM),
    /// with --tls-key.
    #[arg(long, env = "FLOTILLA_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "FLOTILLA_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// `self`: serve the REST API over HTTPS with a certificate the fleet
    /// CA issues (agents verify it with the CA they pinned); `off`: plain
    /// HTTP (the default without --tls-cert).
    #[arg(long, env = "FLOTILLA_TLS", global = true)]
    pub tls: Option<String>,
    /// Let webhooks deliver to loopback and private addresses (receivers
    /// on the operator's own network); link-local stays refused.
    #[arg(long, env = "FLOTILLA_WEBHOOK_ALLOW_PRIVATE", global = true)]
    pub webhook_allow_private: bool,
}

/// How the REST API is served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RestTls {
    /// Plain HTTP (behind an operator's own TLS-terminating proxy, or on
    /// loopback).
    #[default]
    Off,
    /// HTTPS with a certificate the fleet CA issues at start.
    SelfIssued,
    /// HTTPS with the operator's certificate chain and key (PEM files).
    Files { cert: PathBuf, key: PathBuf },
}

impl RestTls {
    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        match self {
            RestTls::Off => "http",
            _ => "https",
        }
    }

    fn choose(
        mode: Option<&str>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<RestTls, ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            key: "tls",
            reason: reason.to_owned(),
        };
        match (mode, cert, key) {
            (None, Some(cert), Some(key)) => Ok(RestTls::Files { cert, key }),
            (None, None, None) | (Some("off"), None, None) => Ok(RestTls::Off),
            (Some("self"), None, None) => Ok(RestTls::SelfIssued),
            (Some("self" | "off"), _, _) => Err(invalid(
                "--tls self|off and --tls-cert/--tls-key exclude each other",
            )),
            (None, _, _) => Err(invalid("give both --tls-cert and --tls-key")),
            (Some(other), _, _) => Err(ConfigError::Invalid {
                key: "tls",
                reason: format!("{other:?} is neither \"self\" nor \"off\""),
            }),
        }
    }
}

/// The keys a configuration file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    body_limit: Option<usize>,
    max_container_section: Option<usize>,
    token_ttl: Option<u64>,
    quic_listen: Option<SocketAddr>,
    agent_lost_after: Option<u64>,
    replace_after: Option<u64>,
    placement_timeout: Option<u64>,
    heartbeat: Option<u64>,
    max_frame: Option<usize>,
    quic_disable_gso: Option<bool>,
    public_url: Option<String>,
    drain_on_rebalance: Option<bool>,
    log_level: Option<String>,
    event_retention_days: Option<u64>,
    tls: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    webhook_allow_private: Option<bool>,
}

/// The controller's effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub body_limit: usize,
    /// Largest container section of one configuration (compact JSON).
    pub max_container_section: usize,
    pub token_ttl: Duration,
    /// Bytes of page cache sled may use.
    pub store_cache_bytes: u64,
    /// Address of the QUIC fleet endpoint.
    pub quic_listen: SocketAddr,
    /// Fleet link timings and limits.
    pub fleet: crate::fleet::FleetSettings,
    /// The file's log level, if it sets one (flags and `RUST_LOG` win).
    pub log_level: Option<String>,
    /// How long events and finished deliveries are kept (`None`: forever).
    pub event_retention: Option<Duration>,
    /// HTTPS for the REST API.
    pub rest_tls: RestTls,
    /// Webhooks may deliver to loopback and private addresses.
    pub webhook_allow_private: bool,
}

/// A configuration that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {source}")]
    Parse {
        path: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid setting {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Config {
    /// Merges command line and environment (`overrides`) over the optional
    /// file over the defaults, then validates.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = match &overrides.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let config = Config {
            data_dir: overrides
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen: overrides
                .listen
                .or(file.listen)
                .unwrap_or(SocketAddr::from(DEFAULT_LISTEN)),
            body_limit: overrides
                .body_limit
                .or(file.body_limit)
                .unwrap_or(DEFAULT_BODY_LIMIT),
            max_container_section: overrides
                .max_container_section
                .or(file.max_container_section)
                .unwrap_or(DEFAULT_MAX_CONTAINER_SECTION),
            token_ttl: Duration::from_secs(
                overrides
                    .token_ttl
                    .or(file.token_ttl)
                    .unwrap_or(DEFAULT_TOKEN_TTL_SECS),
            ),
            store_cache_bytes: 64 * 1024 * 1024,
            quic_listen: overrides
                .quic_listen
                .or(file.quic_listen)
                .unwrap_or(SocketAddr::from(DEFAULT_QUIC_LISTEN)),
            fleet: {
                let defaults = crate::fleet::FleetSettings::default();
                let secs = |cli: Option<u64>, file: Option<u64>, default: Duration| {
                    cli.or(file).map_or(default, Duration::from_secs)
                };
                crate::fleet::FleetSettings {
                    max_frame: overrides
                        .max_frame
                        .or(file.max_frame)
                        .unwrap_or(defaults.max_frame),
                    heartbeat: secs(overrides.heartbeat, file.heartbeat, defaults.heartbeat),
                    lost_after: secs(
                        overrides.agent_lost_after,
                        file.agent_lost_after,
                        defaults.lost_after,
                    ),
                    replace_after: secs(
                        overrides.replace_after,
                        file.replace_after,
                        defaults.replace_after,
                    ),
                    placement_timeout: secs(
                        overrides.placement_timeout,
                        file.placement_timeout,
                        defaults.placement_timeout,
                    ),
                    gso: !(overrides.quic_disable_gso || file.quic_disable_gso.unwrap_or(false)),
                    drain_on_rebalance: overrides.drain_on_rebalance
                        || file.drain_on_rebalance.unwrap_or(false),
                    ..defaults
                }
            },
            log_level: None,
            event_retention: None,
            rest_tls: RestTls::choose(
                overrides.tls.as_deref().or(file.tls.as_deref()),
                overrides.tls_cert.clone().or(file.tls_cert.clone()),
                overrides.tls_key.clone().or(file.tls_key.clone()),
            )?,
            webhook_allow_private: overrides.webhook_allow_private
                || file.webhook_allow_private.unwrap_or(false),
        };
        let mut config = config;
        config.log_level = file.log_level.clone();
        let days = overrides
            .event_retention_days
            .or(file.event_retention_days)
            .unwrap_or(30);
        config.event_retention = (days > 0).then(|| Duration::from_secs(days * 86_400));
        config.fleet.api_url = overrides
            .public_url
            .clone()
            .or(file.public_url)
            .map(|url| url.trim_end_matches('/').to_owned());
        config.fleet.keep_alive = config
            .fleet
            .heartbeat
            .min(std::time::Duration::from_secs(5));
        config.fleet.idle_timeout = config.fleet.lost_after + config.fleet.heartbeat;
        config.validate()?;
        Ok(config)
    }

    /// Refuses values the controller cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.body_limit < 1024 || self.body_limit > 64 * 1024 * 1024 {
            return Err(ConfigError::Invalid {
                key: "body_limit",
                reason: format!("{} bytes is outside 1 KiB..64 MiB", self.body_limit),
            });
        }
        if !(4 * 1024..=1024 * 1024).contains(&self.max_container_section) {
            return Err(ConfigError::Invalid {
                key: "max_container_section",
                reason: format!(
                    "{} bytes is outside 4 KiB..1 MiB",
                    self.max_container_section
                ),
            });
        }
        if self.token_ttl.is_zero() || self.token_ttl > Duration::from_secs(30 * 86_400) {
            return Err(ConfigError::Invalid {
                key: "token_ttl",
                reason: format!("{} s is outside 1 s..30 days", self.token_ttl.as_secs()),
            });
        }
        if let Some(url) = &self.fleet.api_url {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && url.len() <= 2048
                && !url.chars().any(char::is_whitespace);
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "public_url",
                    reason: format!("{url:?} is not an http:// or https:// URL"),
                });
            }
        }
        let frame_cap = flotilla_common::wire::frame::ABSOLUTE_MAX_FRAME;
        if self.fleet.max_frame < 64 * 1024 || self.fleet.max_frame > frame_cap {
            return Err(ConfigError::Invalid {
                key: "max_frame",
                reason: format!(
                    "{} bytes is outside 64 KiB..{frame_cap}",
                    self.fleet.max_frame
                ),
            });
        }
        // Every placement accepted at apply must fit in one frame.
        let overhead = flotilla_common::wire::bounds::PLACEMENT_OVERHEAD;
        if self.fleet.max_frame < self.max_container_section + overhead {
            return Err(ConfigError::Invalid {
                key: "max_frame",
                reason: format!(
                    "{} bytes cannot carry a placement: at least max_container_section ({}) + {overhead}",
                    self.fleet.max_frame, self.max_container_section
                ),
            });
        }
        if self.fleet.heartbeat.is_zero() || self.fleet.lost_after <= self.fleet.heartbeat {
            return Err(ConfigError::Invalid {
                key: "agent_lost_after",
                reason: format!(
                    "must be longer than the heartbeat ({} s <= {} s)",
                    self.fleet.lost_after.as_secs(),
                    self.fleet.heartbeat.as_secs()
                ),
            });
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "data_dir",
                reason: "must not be empty".into(),
            });
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.display().to_string(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_packaged_configuration_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/controller.toml");
        let config = Config::load(&Overrides {
            config: Some(path),
            ..Default::default()
        })
        .expect("packaging/controller.toml is valid");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.quic_listen.to_string(), "127.0.0.1:4433");
        assert!(!config.fleet.drain_on_rebalance);
    }

    use super::*;

    #[test]
    fn command_line_beats_file_beats_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("controller.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nbody_limit = 4096\n").expect("write");
        let overrides = Overrides {
            config: Some(path),
            body_limit: Some(8192),
            ..Overrides::default()
        };
        let config = Config::load(&overrides).expect("load");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.body_limit, 8192);
        assert_eq!(config.token_ttl.as_secs(), DEFAULT_TOKEN_TTL_SECS);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("controller.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:9000\"\n").expect("write");
        let err = Config::load(&Overrides {
            config: Some(path),
            ..Overrides::default()
        })
        .expect_err("typo refused");
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = Config::load(&Overrides {
            body_limit: Some(10),
            ..Overrides::default()
        })
        .expect_err("tiny limit refused");
        assert!(err.to_string().contains("body_limit"), "{err}");
    }

    #[test]
    fn the_frame_cap_leaves_room_for_the_largest_placement() {
        let overhead = flotilla_common::wire::bounds::PLACEMENT_OVERHEAD;
        let cases: Vec<(usize, usize, bool)> = vec![
            (4 * 1024 * 1024, 256 * 1024, true),
            (256 * 1024 + overhead, 256 * 1024, true),
            (256 * 1024 + overhead - 1, 256 * 1024, false),
            (1024 * 1024, 1024 * 1024, false),
            (64 * 1024, 4 * 1024, false),
        ];
        for (max_frame, max_container_section, ok) in cases {
            let result = Config::load(&Overrides {
                max_frame: Some(max_frame),
                max_container_section: Some(max_container_section),
                ..Overrides::default()
            });
            assert_eq!(
                result.is_ok(),
                ok,
                "{max_frame} / {max_container_section}: {result:?}"
            );
            if let Err(err) = result {
                assert!(err.to_string().contains("max_frame"), "{err}");
            }
        }
    }

    #[test]
    fn tls_choices() {
        let path = |p: &str| Some(PathBuf::from(p));
        type Case = (
            Option<&'static str>,
            Option<PathBuf>,
            Option<PathBuf>,
            Option<RestTls>,
        );
        let cases: Vec<Case> = vec![
            (None, None, None, Some(RestTls::Off)),
            (Some("off"), None, None, Some(RestTls::Off)),
            (Some("self"), None, None, Some(RestTls::SelfIssued)),
            (
                None,
                path("c.pem"),
                path("k.pem"),
                Some(RestTls::Files {
                    cert: "c.pem".into(),
                    key: "k.pem".into(),
                }),
            ),
            (None, path("c.pem"), None, None),
            (Some("self"), path("c.pem"), path("k.pem"), None),
            (Some("on"), None, None, None),
        ];
        for (mode, cert, key, expected) in cases {
            assert_eq!(
                RestTls::choose(mode, cert.clone(), key.clone()).ok(),
                expected,
                "{mode:?} {cert:?} {key:?}"
            );
        }
    }
}
