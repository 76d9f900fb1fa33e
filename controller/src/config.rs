//! Controller configuration: command line, then `FLOTILLA_*` variables, then
//! an optional TOML file, then defaults, in that order of precedence.
//! [`Config::load`] merges them and [`Config::validate`] refuses nonsense
//! before anything starts listening.

use crate::api::limits::{HttpLimits, Rate};
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
/// Most fleet connections not yet authenticated, by default.
pub const DEFAULT_QUIC_MAX_UNAUTHENTICATED: usize = 1024;
/// Percentage of that cap above which QUIC Retry is asked, by default.
pub const DEFAULT_QUIC_RETRY_ABOVE: u8 = 50;
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
    /// Seconds a new fleet connection has for its TLS handshake, preamble
    /// and hello or enrollment request (default 5); then it is shed.
    #[arg(long, env = "FLOTILLA_QUIC_HANDSHAKE_TIMEOUT", global = true)]
    pub quic_handshake_timeout: Option<u64>,
    /// Most fleet connections not yet authenticated (default 1024); new
    /// ones past it are refused.
    #[arg(long, env = "FLOTILLA_QUIC_MAX_UNAUTHENTICATED", global = true)]
    pub quic_max_unauthenticated: Option<usize>,
    /// Above this percentage of --quic-max-unauthenticated, new fleet
    /// connections must validate their address with a QUIC Retry first
    /// (default 50; 100: never, 0: always).
    #[arg(long, env = "FLOTILLA_QUIC_RETRY_ABOVE", global = true)]
    pub quic_retry_above: Option<u8>,
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
    /// Active access tokens per API client; a new one makes the oldest lapse.
    #[arg(long, env = "FLOTILLA_MAX_TOKENS_PER_CLIENT", global = true)]
    pub max_tokens_per_client: Option<usize>,
    /// Active tokens a stack's credentials may hold, per instance of the
    /// stack (at least 4); a new one makes the oldest lapse.
    #[arg(long, env = "FLOTILLA_STACK_TOKENS_PER_INSTANCE", global = true)]
    pub stack_tokens_per_instance: Option<usize>,
    /// Stacks one user may own.
    #[arg(long, env = "FLOTILLA_MAX_STACKS_PER_USER", global = true)]
    pub max_stacks_per_user: Option<usize>,
    /// Webhook subscriptions one user may hold.
    #[arg(long, env = "FLOTILLA_MAX_HOOKS_PER_USER", global = true)]
    pub max_hooks_per_user: Option<usize>,
    /// Join tokens one user may have that can still enroll an agent.
    #[arg(long, env = "FLOTILLA_MAX_JOIN_TOKENS_PER_USER", global = true)]
    pub max_join_tokens_per_user: Option<usize>,
    /// Seconds one webhook attempt may take (DNS, connecting, the
    /// answer; default 5): a receiver slower than this is retried later.
    #[arg(long, env = "FLOTILLA_WEBHOOK_TIMEOUT", global = true)]
    pub webhook_timeout: Option<u64>,
    /// Seconds one instance of a rolling restart may take to be back and
    /// healthy before the restart stops and fails (default 300).
    #[arg(long, env = "FLOTILLA_RESTART_TIMEOUT", global = true)]
    pub restart_timeout: Option<u64>,
    /// Seconds a request's headers may take to arrive; also how long a
    /// kept-alive connection may sit idle, and the TLS handshake (10).
    #[arg(long, env = "FLOTILLA_HTTP_HEADER_TIMEOUT", global = true)]
    pub http_header_timeout: Option<u64>,
    /// Seconds a request's whole body may take to arrive (30).
    #[arg(long, env = "FLOTILLA_HTTP_BODY_TIMEOUT", global = true)]
    pub http_body_timeout: Option<u64>,
    /// REST connections served at once; more wait in the listen backlog (512).
    #[arg(long, env = "FLOTILLA_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<usize>,
    /// Requests per second per authenticated caller, on average (20).
    #[arg(long, env = "FLOTILLA_RATE_LIMIT", global = true)]
    pub rate_limit: Option<u32>,
    /// Requests an authenticated caller may send at once (200).
    #[arg(long, env = "FLOTILLA_RATE_BURST", global = true)]
    pub rate_burst: Option<u32>,
    /// Requests per second per source address, for token requests and calls
    /// without a valid token (20).
    #[arg(long, env = "FLOTILLA_ADDRESS_RATE_LIMIT", global = true)]
    pub address_rate_limit: Option<u32>,
    /// Such requests an address may send at once (200).
    #[arg(long, env = "FLOTILLA_ADDRESS_RATE_BURST", global = true)]
    pub address_rate_burst: Option<u32>,
    /// Failed secrets for one client id from one address before that pair
    /// is locked out (10; after 3, each further try waits 1 s, 2 s, 4 s, ...).
    #[arg(long, env = "FLOTILLA_LOCKOUT_AFTER", global = true)]
    pub lockout_after: Option<u32>,
    /// Seconds a lockout lasts (900).
    #[arg(long, env = "FLOTILLA_LOCKOUT_SECS", global = true)]
    pub lockout_secs: Option<u64>,
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
    quic_handshake_timeout: Option<u64>,
    quic_max_unauthenticated: Option<usize>,
    quic_retry_above: Option<u8>,
    public_url: Option<String>,
    drain_on_rebalance: Option<bool>,
    log_level: Option<String>,
    event_retention_days: Option<u64>,
    tls: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    webhook_allow_private: Option<bool>,
    max_tokens_per_client: Option<usize>,
    stack_tokens_per_instance: Option<usize>,
    max_stacks_per_user: Option<usize>,
    max_hooks_per_user: Option<usize>,
    max_join_tokens_per_user: Option<usize>,
    webhook_timeout: Option<u64>,
    restart_timeout: Option<u64>,
    http_header_timeout: Option<u64>,
    http_body_timeout: Option<u64>,
    max_connections: Option<usize>,
    rate_limit: Option<u32>,
    rate_burst: Option<u32>,
    address_rate_limit: Option<u32>,
    address_rate_burst: Option<u32>,
    lockout_after: Option<u32>,
    lockout_secs: Option<u64>,
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
    /// What one user or credential may hold.
    pub quotas: crate::quotas::Quotas,
    /// The longest one webhook attempt may take.
    pub webhook_timeout: Duration,
    /// The longest one instance of a rolling restart may take to be back.
    pub restart_timeout: Duration,
    /// Timeouts, the connection cap, rate limits and the secret lockout.
    pub http: HttpLimits,
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
        let http = http_limits(overrides, &file);
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
                    handshake_timeout: secs(
                        overrides.quic_handshake_timeout,
                        file.quic_handshake_timeout,
                        defaults.handshake_timeout,
                    ),
                    admission: crate::fleet::admission::Limits::new(
                        overrides
                            .quic_max_unauthenticated
                            .or(file.quic_max_unauthenticated)
                            .unwrap_or(DEFAULT_QUIC_MAX_UNAUTHENTICATED),
                        overrides
                            .quic_retry_above
                            .or(file.quic_retry_above)
                            .unwrap_or(DEFAULT_QUIC_RETRY_ABOVE),
                    ),
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
            quotas: {
                let defaults = crate::quotas::Quotas::default();
                crate::quotas::Quotas {
                    tokens_per_client: overrides
                        .max_tokens_per_client
                        .or(file.max_tokens_per_client)
                        .unwrap_or(defaults.tokens_per_client),
                    stack_tokens_per_instance: overrides
                        .stack_tokens_per_instance
                        .or(file.stack_tokens_per_instance)
                        .unwrap_or(defaults.stack_tokens_per_instance),
                    stacks_per_user: overrides
                        .max_stacks_per_user
                        .or(file.max_stacks_per_user)
                        .unwrap_or(defaults.stacks_per_user),
                    hooks_per_user: overrides
                        .max_hooks_per_user
                        .or(file.max_hooks_per_user)
                        .unwrap_or(defaults.hooks_per_user),
                    join_tokens_per_user: overrides
                        .max_join_tokens_per_user
                        .or(file.max_join_tokens_per_user)
                        .unwrap_or(defaults.join_tokens_per_user),
                }
            },
            webhook_timeout: overrides
                .webhook_timeout
                .or(file.webhook_timeout)
                .map_or(crate::hooks::DEFAULT_TIMEOUT, Duration::from_secs),
            restart_timeout: overrides.restart_timeout.or(file.restart_timeout).map_or(
                crate::stacks::restart::INSTANCE_TIMEOUT,
                Duration::from_secs,
            ),
            http,
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
        if !(1..=60).contains(&self.webhook_timeout.as_secs()) {
            return Err(ConfigError::Invalid {
                key: "webhook_timeout",
                reason: format!("{} s is outside 1 s..60 s", self.webhook_timeout.as_secs()),
            });
        }
        if !(1..=3600).contains(&self.restart_timeout.as_secs()) {
            return Err(ConfigError::Invalid {
                key: "restart_timeout",
                reason: format!(
                    "{} s is outside 1 s..3600 s",
                    self.restart_timeout.as_secs()
                ),
            });
        }
        validate_http(&self.http)?;
        let handshake = self.fleet.handshake_timeout;
        if handshake.is_zero() || handshake > Duration::from_secs(120) {
            return Err(ConfigError::Invalid {
                key: "quic_handshake_timeout",
                reason: format!("{} s is outside 1..120 s", handshake.as_secs()),
            });
        }
        let cap = self.fleet.admission.max_unauthenticated;
        if !(1..=65_536).contains(&cap) {
            return Err(ConfigError::Invalid {
                key: "quic_max_unauthenticated",
                reason: format!("{cap} is outside 1..65536"),
            });
        }
        let percent = self.fleet.admission.retry_above_percent;
        if percent > 100 {
            return Err(ConfigError::Invalid {
                key: "quic_retry_above",
                reason: format!("{percent} is not a percentage (0..100)"),
            });
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "data_dir",
                reason: "must not be empty".into(),
            });
        }
        if let Some((key, reason)) = self.quotas.problem() {
            return Err(ConfigError::Invalid { key, reason });
        }
        Ok(())
    }
}

/// The HTTP limits: flag or variable, else the file, else the default.
fn http_limits(overrides: &Overrides, file: &FileConfig) -> HttpLimits {
    let defaults = HttpLimits::default();
    let secs = |cli: Option<u64>, file: Option<u64>, default: Duration| {
        cli.or(file).map_or(default, Duration::from_secs)
    };
    let rate = |per_second: Option<u32>, burst: Option<u32>, default: Rate| Rate {
        per_second: per_second.unwrap_or(default.per_second),
        burst: burst.unwrap_or(default.burst),
    };
    HttpLimits {
        header_timeout: secs(
            overrides.http_header_timeout,
            file.http_header_timeout,
            defaults.header_timeout,
        ),
        body_timeout: secs(
            overrides.http_body_timeout,
            file.http_body_timeout,
            defaults.body_timeout,
        ),
        max_connections: overrides
            .max_connections
            .or(file.max_connections)
            .unwrap_or(defaults.max_connections),
        caller_rate: rate(
            overrides.rate_limit.or(file.rate_limit),
            overrides.rate_burst.or(file.rate_burst),
            defaults.caller_rate,
        ),
        address_rate: rate(
            overrides.address_rate_limit.or(file.address_rate_limit),
            overrides.address_rate_burst.or(file.address_rate_burst),
            defaults.address_rate,
        ),
        lockout: crate::auth::lockout::LockoutPolicy {
            lock_after: overrides
                .lockout_after
                .or(file.lockout_after)
                .unwrap_or(defaults.lockout.lock_after),
            lock_for: secs(
                overrides.lockout_secs,
                file.lockout_secs,
                defaults.lockout.lock_for,
            ),
            ..defaults.lockout
        },
    }
}

/// Refuses HTTP limits outside what the server can work with.
fn validate_http(http: &HttpLimits) -> Result<(), ConfigError> {
    let within = |key: &'static str, value: u64, low: u64, high: u64, unit: &str| {
        if (low..=high).contains(&value) {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                key,
                reason: format!("{value} {unit} is outside {low}..{high}"),
            })
        }
    };
    within(
        "http_header_timeout",
        http.header_timeout.as_secs(),
        1,
        300,
        "s",
    )?;
    within(
        "http_body_timeout",
        http.body_timeout.as_secs(),
        1,
        3600,
        "s",
    )?;
    let connections = u64::try_from(http.max_connections).unwrap_or(u64::MAX);
    within("max_connections", connections, 1, 1_000_000, "connections")?;
    within(
        "rate_limit",
        http.caller_rate.per_second.into(),
        1,
        1_000_000,
        "per s",
    )?;
    within(
        "rate_burst",
        http.caller_rate.burst.into(),
        1,
        1_000_000,
        "requests",
    )?;
    let address = http.address_rate;
    within(
        "address_rate_limit",
        address.per_second.into(),
        1,
        1_000_000,
        "per s",
    )?;
    within(
        "address_rate_burst",
        address.burst.into(),
        1,
        1_000_000,
        "requests",
    )?;
    within(
        "lockout_after",
        http.lockout.lock_after.into(),
        1,
        1000,
        "failures",
    )?;
    within(
        "lockout_secs",
        http.lockout.lock_for.as_secs(),
        1,
        86_400,
        "s",
    )
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
        for timeout in [0, 61] {
            let err = Config::load(&Overrides {
                webhook_timeout: Some(timeout),
                ..Overrides::default()
            })
            .expect_err("webhook timeout out of range");
            assert!(err.to_string().contains("webhook_timeout"), "{err}");
        }
        for timeout in [0, 3601] {
            let err = Config::load(&Overrides {
                restart_timeout: Some(timeout),
                ..Overrides::default()
            })
            .expect_err("restart timeout out of range");
            assert!(err.to_string().contains("restart_timeout"), "{err}");
        }
        let config = Config::load(&Overrides::default()).expect("defaults");
        assert_eq!(config.webhook_timeout, crate::hooks::DEFAULT_TIMEOUT);
        assert_eq!(
            config.restart_timeout,
            crate::stacks::restart::INSTANCE_TIMEOUT
        );
    }

    #[test]
    fn http_limits_come_from_flags_file_and_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("controller.toml");
        std::fs::write(
            &path,
            "rate_limit = 5\nrate_burst = 50\nlockout_secs = 60\nmax_connections = 64\n",
        )
        .expect("write");
        let config = Config::load(&Overrides {
            config: Some(path.clone()),
            rate_limit: Some(7),
            http_header_timeout: Some(3),
            ..Overrides::default()
        })
        .expect("load");
        let http = &config.http;
        assert_eq!(
            http.caller_rate,
            Rate {
                per_second: 7,
                burst: 50
            }
        );
        assert_eq!(http.address_rate, crate::api::limits::DEFAULT_RATE);
        assert_eq!(http.header_timeout, Duration::from_secs(3));
        assert_eq!(http.body_timeout, crate::api::limits::DEFAULT_BODY_TIMEOUT);
        assert_eq!(http.max_connections, 64);
        assert_eq!(http.lockout.lock_for, Duration::from_secs(60));
        assert_eq!(http.lockout.lock_after, 10);
        type Zero = (fn(&mut Overrides), &'static str);
        let zeroes: [Zero; 4] = [
            (|o| o.rate_limit = Some(0), "rate_limit"),
            (|o| o.max_connections = Some(0), "max_connections"),
            (|o| o.http_body_timeout = Some(0), "http_body_timeout"),
            (|o| o.lockout_after = Some(0), "lockout_after"),
        ];
        for (zero, key) in zeroes {
            let mut overrides = Overrides::default();
            zero(&mut overrides);
            let err = Config::load(&overrides).expect_err(key);
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn quic_limits_default_and_bounds() {
        let config = Config::load(&Overrides::default()).expect("defaults load");
        assert_eq!(config.fleet.handshake_timeout, Duration::from_secs(5));
        assert_eq!(config.fleet.admission.max_unauthenticated, 1024);
        assert_eq!(config.fleet.admission.retry_from(), 512);
        // (handshake timeout, cap, retry percentage, the key refused)
        let cases = [
            (Some(0), None, None, Some("quic_handshake_timeout")),
            (Some(121), None, None, Some("quic_handshake_timeout")),
            (None, Some(0), None, Some("quic_max_unauthenticated")),
            (None, None, Some(101), Some("quic_retry_above")),
            (Some(2), Some(10), Some(100), None),
        ];
        for (timeout, cap, percent, refused) in cases {
            let overrides = Overrides {
                quic_handshake_timeout: timeout,
                quic_max_unauthenticated: cap,
                quic_retry_above: percent,
                ..Overrides::default()
            };
            match (Config::load(&overrides), refused) {
                (Ok(_), None) => {}
                (Err(err), Some(key)) => assert!(err.to_string().contains(key), "{err}"),
                (result, _) => panic!("{overrides:?}: {result:?}"),
            }
        }
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
