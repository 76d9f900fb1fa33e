//! `flotilla-agent`: enroll this VM with a controller, then run.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use flotilla_agent::config::{self, Common, EnrollArgs, RunArgs};
use flotilla_agent::daemon::Config;
use flotilla_agent::identity::Identity;
use flotilla_agent::state::AgentStore;
use flotilla_agent::tls::Trust;
use std::time::Duration;

/// Flotilla VM agent.
#[derive(Debug, Parser)]
#[command(name = "flotilla-agent", version, about)]
struct Cli {
    #[command(flatten)]
    common: Common,
    /// Log format: `auto` (journald under systemd, text otherwise),
    /// `text`, `json` or `journald`.
    #[arg(
        long,
        env = "FLOTILLA_AGENT_LOG_FORMAT",
        default_value = "auto",
        global = true
    )]
    log_format: flotilla_common::process::LogFormat,
    /// Log level or filter (`info`, `debug`, `flotilla_agent=debug`;
    /// default: the file's `log_level`, else `info`); `RUST_LOG` wins.
    #[arg(long, env = "FLOTILLA_AGENT_LOG_LEVEL", global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll this VM with a controller (once): makes a key here, gets it
    /// certified with a join token.
    Enroll(EnrollArgs),
    /// Run the agent.
    Run(RunArgs),
    /// Show the identity and the state (when the agent is not running).
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let file = config::read_file(cli.common.config.as_deref())?;
    let level = cli
        .log_level
        .clone()
        .or_else(|| file.log_level.clone())
        .unwrap_or_else(|| "info".to_owned());
    flotilla_common::process::init_logging(cli.log_format, &level);
    flotilla_common::tls::install_provider();
    let data_dir = config::data_dir(&cli.common, &file);
    match cli.command {
        Command::Enroll(args) => enroll(&cli.common, args, &file, &data_dir).await,
        Command::Run(args) => run(&cli.common, args, &file, &data_dir).await,
        Command::Status { json } => status(&data_dir, json),
    }
}

async fn enroll(
    common: &Common,
    args: EnrollArgs,
    file: &config::FileConfig,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let controller = args
        .controller
        .or_else(|| file.controller.clone())
        .context("--controller HOST:PORT is required")?;
    let join_token = args.join_token.context("--join-token is required")?;
    let trust = match (
        args.ca_fingerprint.or_else(|| file.ca_fingerprint.clone()),
        args.ca_file.or_else(|| file.ca_file.clone()),
    ) {
        (Some(fingerprint), _) => Trust::Fingerprint(
            flotilla_common::tls::normalize_fingerprint(&fingerprint).with_context(|| {
                format!("{fingerprint:?} is not a SHA-256 fingerprint (sha256:<64 hex digits>)")
            })?,
        ),
        (None, Some(path)) => {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            Trust::CaCert(
                der_of(&bytes)
                    .with_context(|| format!("{} holds no certificate", path.display()))?,
            )
        }
        (None, None) => {
            bail!("give --ca-fingerprint sha256:... (from the join token answer) or --ca-file")
        }
    };
    let hostname = flotilla_agent::facts::hostname();
    let instance_id = match common
        .instance_id
        .clone()
        .or_else(|| file.instance_id.clone())
    {
        Some(id) => id,
        None => cloud_facts(common, file)
            .await
            .and_then(|found| found.facts.instance_id)
            .unwrap_or_else(|| hostname.clone()),
    };
    if Identity::exists(data_dir) {
        tracing::warn!(data_dir = %data_dir.display(), "replacing the existing identity");
    }
    let enrollment = flotilla_agent::enroll::enroll(
        flotilla_agent::enroll::EnrollOptions {
            controller: &controller,
            join_token: &join_token,
            trust,
            instance_id: &instance_id,
            hostname: &hostname,
        },
        data_dir,
    )
    .await?;
    tracing::info!(agent_id = %enrollment.agent_id, instance_id = %enrollment.instance_id, "enrolled");
    println!(
        "enrolled as {} (instance {})",
        enrollment.agent_id, enrollment.instance_id
    );
    println!("next: flotilla-agent run --data-dir {}", data_dir.display());
    Ok(())
}

/// How long start-up waits for a metadata service.
const METADATA_TIMEOUT: Duration = Duration::from_secs(1);

/// The cloud this VM runs on, where its metadata service answers, and
/// what that service says about the instance.
struct CloudFacts {
    cloud: flotilla_agent::spot::Cloud,
    base: String,
    facts: flotilla_agent::spot::detect::InstanceFacts,
}

/// The cloud (named, or detected with `auto`) and its metadata.
async fn cloud_facts(common: &Common, file: &config::FileConfig) -> Option<CloudFacts> {
    use flotilla_agent::spot::detect;
    let choice = common
        .cloud
        .or(file.cloud)
        .unwrap_or(config::CloudChoice::Auto);
    let base = common
        .metadata_url
        .clone()
        .or_else(|| file.metadata_url.clone());
    let cloud = match choice {
        config::CloudChoice::None => return None,
        config::CloudChoice::Auto => {
            let found = detect::detect(base.as_deref(), METADATA_TIMEOUT).await;
            tracing::info!(cloud = ?found.map(|c| c.name()), "cloud detection");
            found?
        }
        named => named.named()?,
    };
    let base = base.unwrap_or_else(|| cloud.default_base().to_owned());
    let facts = detect::instance_facts(cloud, &base, METADATA_TIMEOUT).await;
    tracing::info!(cloud = cloud.name(), instance_id = ?facts.instance_id, instance_type = ?facts.instance_type, lifecycle = ?facts.lifecycle, "instance metadata");
    Some(CloudFacts { cloud, base, facts })
}

fn der_of(bytes: &[u8]) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    if bytes.starts_with(b"-----") {
        rustls::pki_types::CertificateDer::from_pem_slice(bytes)
            .ok()
            .map(|der| der.to_vec())
    } else {
        Some(bytes.to_vec())
    }
}

async fn run(
    common: &Common,
    args: RunArgs,
    file: &config::FileConfig,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let identity = Identity::load(data_dir)?;
    if let Some(wanted) = common.instance_id.as_ref().or(file.instance_id.as_ref()) {
        if *wanted != identity.enrollment.instance_id {
            bail!(
                "this agent is enrolled as instance {}; re-enroll to become {wanted}",
                identity.enrollment.instance_id
            );
        }
    }
    let runtime = args
        .runtime
        .or(file.runtime)
        .unwrap_or(flotilla_agent::runtime::RuntimeKind::Docker);
    let cloud = cloud_facts(common, file).await;
    let mut labels = cloud
        .as_ref()
        .map(|found| found.facts.labels(found.cloud))
        .unwrap_or_default();
    labels.extend(config::labels(&args.labels, file)?);
    let spot_interval = match (args.spot_poll_interval, &file.spot_poll_interval) {
        (Some(interval), _) => interval,
        (None, Some(text)) => config::parse_interval(text).map_err(anyhow::Error::msg)?,
        (None, None) => Duration::from_secs(1),
    };
    let docker = flotilla_agent::runtime::docker::DockerSettings {
        socket: args
            .docker_socket
            .clone()
            .or_else(|| file.docker_socket.clone())
            .unwrap_or_else(|| "/var/run/docker.sock".into()),
        network: args
            .docker_network
            .clone()
            .or_else(|| file.docker_network.clone())
            .unwrap_or_else(|| "flotilla".into()),
        orphan_grace: Duration::from_secs(args.orphan_grace.or(file.orphan_grace).unwrap_or(60)),
        cleanup_every: Duration::from_secs(
            args.cleanup_interval
                .or(file.cleanup_interval)
                .unwrap_or(600)
                .max(1),
        ),
        image_prune_age: Duration::from_secs(
            args.image_prune_age
                .or(file.image_prune_age)
                .unwrap_or(86_400),
        ),
        ports: args
            .published_ports
            .or(file.published_ports)
            .unwrap_or(flotilla_agent::traffic::PortMode::Nftables),
        code_root: std::fs::canonicalize(data_dir)
            .with_context(|| format!("cannot resolve {}", data_dir.display()))?
            .join("code"),
    };
    let metrics_listen = args
        .metrics_listen
        .clone()
        .or_else(|| file.metrics_listen.clone())
        .unwrap_or_else(|| config::DEFAULT_METRICS_LISTEN.to_owned());
    let config = Config {
        identity,
        data_dir: data_dir.to_path_buf(),
        runtime,
        docker,
        labels,
        max_frame: args
            .max_frame
            .or(file.max_frame)
            .unwrap_or(flotilla_common::wire::DEFAULT_MAX_FRAME),
        max_backoff: Duration::from_secs(args.max_backoff.or(file.max_backoff).unwrap_or(30)),
        gso: !(args.quic_disable_gso || file.quic_disable_gso.unwrap_or(false)),
        metrics_listen: config::metrics_listen(&metrics_listen)?,
        watch: cloud.map(|found| flotilla_agent::spot::watch::WatchSettings {
            cloud: found.cloud,
            base: found.base,
            interval: spot_interval,
        }),
    };
    let handle = flotilla_agent::daemon::start(config, async {
        flotilla_common::process::shutdown_signal().await;
        flotilla_common::systemd::stopping();
    })
    .await?;
    flotilla_common::systemd::ready("running; the fleet link connects in the background");
    let watchdog_store = AgentStore::clone(handle.store());
    let watchdog = flotilla_common::systemd::spawn_watchdog(move || {
        let store = watchdog_store.clone();
        async move { store.last_seq().is_ok() }
    });
    handle.wait().await?;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    Ok(())
}

fn status(data_dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let identity = Identity::load(data_dir)?;
    let state = match AgentStore::open(&data_dir.join("state")) {
        Ok(store) => Some((
            store.desired()?.map_or(0, |d| d.generation),
            store.last_seq()?,
            store.outbox_len(),
        )),
        Err(flotilla_agent::state::StateError::Locked(_)) => None,
        Err(err) => return Err(err.into()),
    };
    let e = &identity.enrollment;
    if json {
        let value = serde_json::json!({
            "agent_id": e.agent_id,
            "instance_id": e.instance_id,
            "controller": e.controller,
            "ca_fingerprint": e.ca_fingerprint,
            "generation": state.map(|s| s.0),
            "last_seq": state.map(|s| s.1),
            "outbox": state.map(|s| s.2),
            "running": state.is_none(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("agent_id:    {}", e.agent_id);
    println!("instance_id: {}", e.instance_id);
    println!("controller:  {}", e.controller);
    match state {
        Some((generation, last_seq, outbox)) => {
            println!("generation:  {generation}");
            println!("last report: {last_seq}");
            println!("outbox:      {outbox}");
        }
        None => println!("state:       in use (the agent is running)"),
    }
    Ok(())
}
