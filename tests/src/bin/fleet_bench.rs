//! Fleet benchmark: a real controller process and N simulated agents (real
//! enrolled identities, real mutual-TLS QUIC connections, many per
//! process, a runtime that does nothing). Prints: time for all N to
//! connect, time from a template update at the REST API until each agent
//! has acknowledged the new generation (p50/p99/max), and controller RSS.
//! With `--stacks-per-agent N` every agent runs N stacks (a desired state
//! of N parts) and each timed update changes one of them.
//!
//! `cargo run --release -p flotilla-tests --bin fleet_bench -- --agents 1000 --stacks-per-agent 10`

use anyhow::{bail, Context};
use clap::Parser;
use flotilla_agent::enroll::{request, EnrollOptions};
use flotilla_agent::identity::Identity;
use flotilla_agent::tls::Trust;
use flotilla_common::wire::messages::{AgentMessage, ControllerMessage, Hello, HostFacts};
use flotilla_common::wire::parts::{Assembler, Outcome, Piece};
use flotilla_common::wire::{frame, handshake, CONTROLLER_NAME, PROTOCOL_VERSION};
use flotilla_tests::{rss_kib, web_template, Api, ControllerProcess};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
struct Args {
    /// Number of simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Agents per client UDP endpoint.
    #[arg(long, default_value_t = 500)]
    per_endpoint: usize,
    /// Concurrent enrollments / connection attempts.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Timed updates to run (figures are per update).
    #[arg(long, default_value_t = 3)]
    updates: usize,
    /// Stacks placed on every agent before the timed updates.
    #[arg(long, default_value_t = 1)]
    stacks_per_agent: usize,
}

/// What each simulated agent records: when it acked which generation,
/// and how many placements that generation held.
struct Probe {
    generation: AtomicU64,
    placements: AtomicU64,
    /// Microseconds since the bench's epoch when the latest ack was sent.
    acked_at_us: AtomicU64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One simulated agent: connect, hello, then ack every desired state.
async fn run_agent(
    endpoint: quinn::Endpoint,
    addr: std::net::SocketAddr,
    identity: Identity,
    probe: Arc<Probe>,
    epoch: Instant,
    connected: Arc<tokio::sync::Barrier>,
    gate: Arc<Semaphore>,
) -> anyhow::Result<()> {
    let config = flotilla_agent::tls::control_config(
        &identity,
        Duration::from_secs(5),
        Duration::from_secs(60),
        true,
    )?;
    let permit = gate.acquire_owned().await?;
    let connection = endpoint
        .connect_with(config, addr, CONTROLLER_NAME)?
        .await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    handshake::send(&mut send, PROTOCOL_VERSION).await?;
    let hello = AgentMessage::Hello(Hello {
        agent_version: "bench".into(),
        labels: BTreeMap::new(),
        generation: 0,
        facts: HostFacts::default(),
    });
    frame::write(&mut send, &hello, 1 << 22).await?;
    handshake::receive(&mut recv, PROTOCOL_VERSION).await?;
    let heartbeat = match frame::read::<_, ControllerMessage>(&mut recv, 1 << 22).await? {
        Some(ControllerMessage::Welcome(welcome)) => welcome.heartbeat_secs,
        other => bail!("expected welcome, got {other:?}"),
    };
    drop(permit);
    // Heartbeats start at once: waiting for the others here would leave
    // early agents silent past the lost timeout when connecting takes long.
    tokio::spawn(async move { connected.wait().await });
    let mut beat = tokio::time::interval(Duration::from_secs(u64::from(heartbeat.max(1))));
    beat.tick().await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let message = frame::read::<_, ControllerMessage>(&mut recv, 1 << 22).await;
            let done = !matches!(message, Ok(Some(_)));
            if tx.send(message).await.is_err() || done {
                return;
            }
        }
    });
    let mut assembler = Assembler::default();
    loop {
        tokio::select! {
            message = rx.recv() => match message {
                Some(Ok(Some(message))) => {
                    let Ok(piece) = Piece::of(message) else { continue };
                    match assembler.step(piece) {
                        Outcome::Complete(desired) => {
                            frame::write(&mut send, &AgentMessage::Ack { generation: desired.generation }, 1 << 22).await?;
                            probe.acked_at_us.store(epoch.elapsed().as_micros() as u64, Ordering::SeqCst);
                            probe.placements.store(desired.placements.len() as u64, Ordering::SeqCst);
                            probe.generation.store(desired.generation, Ordering::SeqCst);
                        }
                        Outcome::Refused(error) => bail!("desired state refused: {error}"),
                        _ => {}
                    }
                }
                _ => return Ok(()),
            },
            _ = beat.tick() => {
                frame::write(&mut send, &AgentMessage::Heartbeat(HostFacts::default()), 1 << 22).await?;
            }
        }
    }
}

/// Waits until every probe passes `done` (its index and the probe).
async fn wait_all(
    probes: &[Arc<Probe>],
    what: &str,
    limit: Duration,
    done: impl Fn(usize, &Probe) -> bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let behind = probes
            .iter()
            .enumerate()
            .filter(|(i, p)| !done(*i, p))
            .count();
        if behind == 0 {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("{behind} agents never acknowledged {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let log_level = std::env::var("BENCH_CONTROLLER_LOG")
        .unwrap_or_else(|_| "warn,flotilla_controller::server=info".into());
    flotilla_common::tls::install_provider();
    let n = args.agents;
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(
        dir.path(),
        &["--placement-timeout", "600"],
        &[("RUST_LOG", log_level.as_str())],
    )?;
    let pid = controller.pid();
    let api = Api::admin(&controller.url(""), dir.path()).await?;
    let (token, fingerprint) = api
        .join_token(serde_json::json!({"max_uses": n as u32, "ttl_secs": 3600}))
        .await?;
    let addr = controller.quic_addr;
    println!(
        "controller pid {pid}, idle RSS {} KiB",
        rss_kib(pid, "VmRSS:")
    );

    // Enroll N identities (each a fresh key and a CA-signed certificate).
    let started = Instant::now();
    let endpoints: Vec<quinn::Endpoint> = (0..n.div_ceil(args.per_endpoint))
        // Shared by many simulated agents, so with the controller's large
        // buffers: at the kernel's default a desired state pushed to five
        // hundred agents at once overflows it, and the retransmissions, not
        // the controller, set the figures. (A real agent has its own.)
        .map(|_| flotilla_common::wire::endpoint::bind(([127, 0, 0, 1], 0).into(), None))
        .collect::<Result<_, _>>()?;
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let mut enrolling = tokio::task::JoinSet::new();
    for i in 0..n {
        let endpoint = endpoints[i / args.per_endpoint].clone();
        let (token, fingerprint, gate) = (token.clone(), fingerprint.clone(), gate.clone());
        enrolling.spawn(async move {
            let _permit = gate.acquire().await?;
            let controller = addr.to_string();
            let instance = format!("bench-{i:05}");
            let options = EnrollOptions {
                controller: &controller,
                join_token: &token,
                trust: Trust::Fingerprint(fingerprint),
                instance_id: &instance,
                hostname: "bench",
            };
            anyhow::Ok(request(&endpoint, addr, &options).await?)
        });
    }
    let mut identities = Vec::with_capacity(n);
    while let Some(result) = enrolling.join_next().await {
        match result.context("enrollment task")? {
            Ok(identity) => identities.push(identity),
            Err(err) => {
                let logs = controller.log_text();
                let tail: Vec<&str> = logs.lines().rev().take(30).collect();
                eprintln!(
                    "controller log tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
                return Err(err);
            }
        }
    }
    println!(
        "enrolled {n} agents in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    // Connect them all.
    let epoch = Instant::now();
    let connected = Arc::new(tokio::sync::Barrier::new(n + 1));
    let probes: Vec<Arc<Probe>> = (0..n)
        .map(|_| {
            Arc::new(Probe {
                generation: AtomicU64::new(0),
                placements: AtomicU64::new(0),
                acked_at_us: AtomicU64::new(0),
            })
        })
        .collect();
    let mut running = tokio::task::JoinSet::new();
    for (i, identity) in identities.into_iter().enumerate() {
        running.spawn(run_agent(
            endpoints[i / args.per_endpoint].clone(),
            addr,
            identity,
            probes[i].clone(),
            epoch,
            connected.clone(),
            gate.clone(),
        ));
    }
    tokio::select! {
        _ = connected.wait() => {}
        Some(result) = running.join_next() => bail!("an agent failed while connecting: {result:?}"),
    }
    let connect_secs = epoch.elapsed().as_secs_f64();
    println!("all {n} agents connected in {connect_secs:.2} s");
    let agents = api.get("/v3/alm/agents").await?;
    let connected_count = agents.as_array().map_or(0, |a| {
        a.iter().filter(|a| a["state"] == "connected").count()
    });
    println!(
        "controller sees {connected_count} connected; RSS {} KiB",
        rss_kib(pid, "VmRSS:")
    );

    // Place the stacks on every agent, then time updates of the first.
    let placed = Instant::now();
    let mut stacks = Vec::with_capacity(args.stacks_per_agent);
    for i in 0..args.stacks_per_agent.max(1) {
        stacks.push(
            api.apply(&web_template(n as u64, &format!("bench-s{i}")))
                .await?,
        );
    }
    let want = stacks.len() as u64;
    wait_all(&probes, "every stack", Duration::from_secs(600), |_, p| {
        p.placements.load(Ordering::SeqCst) >= want
    })
    .await?;
    println!(
        "{want} stacks placed and acknowledged by all in {:.3} s",
        placed.elapsed().as_secs_f64()
    );
    let mut all_p50 = Vec::new();
    let mut all_p99 = Vec::new();
    for update in 1..=args.updates {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before: Vec<u64> = probes
            .iter()
            .map(|p| p.generation.load(Ordering::SeqCst))
            .collect();
        let t0 = epoch.elapsed().as_micros() as u64;
        api.update(
            &stacks[0],
            &web_template(n as u64, &format!("bench-{update}")),
        )
        .await?;
        let rest_ms = (epoch.elapsed().as_micros() as u64 - t0) as f64 / 1000.0;
        wait_all(&probes, "the update", Duration::from_secs(300), |i, p| {
            p.generation.load(Ordering::SeqCst) > before[i]
        })
        .await?;
        let mut latencies: Vec<f64> = probes
            .iter()
            .map(|p| (p.acked_at_us.load(Ordering::SeqCst).saturating_sub(t0)) as f64 / 1000.0)
            .collect();
        latencies.sort_by(|a, b| a.total_cmp(b));
        let (p50, p99, max) = (
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0),
            percentile(&latencies, 100.0),
        );
        println!("update {update}: REST answered in {rest_ms:.1} ms; acked by all {n}: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms");
        all_p50.push(p50);
        all_p99.push(p99);
    }
    let rss = rss_kib(pid, "VmRSS:");
    let hwm = rss_kib(pid, "VmHWM:");
    println!(
        "SUMMARY agents={n} stacks_per_agent={want} connect_all_s={connect_secs:.2} update_ack_p50_ms={:.1} update_ack_p99_ms={:.1} controller_rss_mib={:.1} controller_peak_rss_mib={:.1}",
        all_p50.iter().copied().fold(f64::NAN, f64::max),
        all_p99.iter().copied().fold(f64::NAN, f64::max),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    running.abort_all();
    if let Ok(path) = std::env::var("BENCH_CONTROLLER_LOG_FILE") {
        std::fs::write(path, controller.log_text())?;
    }
    let logs = controller.logs.clone();
    if let Err(err) = controller.terminate() {
        let logs = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
        let tail: Vec<&str> = logs.lines().rev().take(30).collect();
        eprintln!(
            "controller log tail:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        return Err(err);
    }
    Ok(())
}
