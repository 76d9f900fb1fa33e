//! Hostile benchmark: a real controller process under stalled fleet
//! handshakes and idle REST connections. Measures the controller's RSS at
//! rest, with N stalled QUIC connections (some that never finish TLS, some
//! that finish it and send nothing, some one byte into the preamble) and M
//! idle HTTP connections (nothing sent, or half a request header) open, how
//! long the controller takes to shed them all, and its RSS after. Shed
//! times count from the first connection opened.
//!
//! `cargo run --release -p flotilla-tests --bin hostile_bench -- --quic 1000 --http 1000`

use anyhow::Context;
use clap::Parser;
use flotilla_tests::hostile::{closed_by_server, idle_http, open_stalled, RawInitials, Stall};
use flotilla_tests::{rss_kib, scrape_metrics, ControllerProcess};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// Stalled QUIC connections in all.
    #[arg(long, default_value_t = 1000)]
    quic: usize,
    /// Of those, how many never finish the TLS handshake (sent first, so
    /// they come in below the Retry threshold).
    #[arg(long, default_value_t = 200)]
    quic_tls: usize,
    /// Idle HTTP connections (half send nothing, half a partial header).
    #[arg(long, default_value_t = 1000)]
    http: usize,
    /// The controller's --quic-handshake-timeout, in seconds.
    #[arg(long, default_value_t = 5)]
    handshake_timeout: u64,
    /// How long to wait for the controller to shed everything, in seconds.
    #[arg(long, default_value_t = 120)]
    wait: u64,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Waits for every shed in `tasks` (each answering its own delay) until
/// `deadline`; returns the delays seen and how many were still open.
async fn shed_times(
    mut tasks: tokio::task::JoinSet<Duration>,
    deadline: tokio::time::Instant,
) -> (Vec<Duration>, usize) {
    let mut times = Vec::new();
    while let Ok(Some(Ok(elapsed))) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        times.push(elapsed);
    }
    (times, tasks.len())
}

fn describe(what: &str, count: usize, times: &[Duration], open: usize) -> String {
    let last = times.iter().max().map_or(f64::NAN, Duration::as_secs_f64);
    format!(
        "{what}: {} of {count} shed, last after {last:.2} s; {open} still open",
        times.len()
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let timeout = args.handshake_timeout.to_string();
    let controller = ControllerProcess::spawn(
        dir.path(),
        &["--quic-handshake-timeout", &timeout],
        &[("RUST_LOG", "info")],
    )?;
    let pid = controller.pid();
    let metrics_url = controller.url("/metrics");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rest = rss_kib(pid, "VmRSS:");
    println!("controller at rest: RSS {:.1} MiB", mib(rest));

    let started = Instant::now();
    let epoch = tokio::time::Instant::now();
    let mut http = tokio::task::JoinSet::new();
    for i in 0..args.http {
        let stream = idle_http(controller.addr, i % 2 == 1)
            .await
            .with_context(|| format!("idle HTTP connection {i}"))?;
        http.spawn(async move {
            closed_by_server(stream).await;
            epoch.elapsed()
        });
    }
    // The QUIC ones last, so all are open together within the deadline.
    let raw_count = args.quic_tls.min(args.quic);
    let _raw = RawInitials::send(controller.quic_addr, &controller.ca_fingerprint, raw_count)?;
    let (_endpoints, stalled) = open_stalled(
        controller.quic_addr,
        &controller.ca_fingerprint,
        args.quic - raw_count,
        &[Stall::AfterTls, Stall::OnePreambleByte],
        64,
    )
    .await?;
    let opened = started.elapsed();
    let open_now = scrape_metrics(&metrics_url)
        .await?
        .get("flotilla_fleet_unauthenticated_connections")
        .copied()
        .unwrap_or(0.0);
    let loaded = rss_kib(pid, "VmRSS:");
    println!(
        "opened {} stalled QUIC ({raw_count} in TLS) and {} idle HTTP in {:.2} s; controller counts {open_now} unauthenticated; RSS {:.1} MiB (+{:.1})",
        args.quic,
        args.http,
        opened.as_secs_f64(),
        mib(loaded),
        mib(loaded.saturating_sub(rest))
    );

    let mut quic = tokio::task::JoinSet::new();
    for one in stalled {
        quic.spawn(async move {
            one.connection.closed().await;
            epoch.elapsed()
        });
    }
    let deadline = epoch + Duration::from_secs(args.wait);
    let (quic_times, quic_open) = shed_times(quic, deadline).await;
    // The raw handshakes have no client to tell; the controller counts them.
    let mut tls_shed = 0.0;
    while tokio::time::Instant::now() < deadline {
        tls_shed = scrape_metrics(&metrics_url)
            .await?
            .get(r#"flotilla_fleet_connections_shed_total{reason="tls_timeout"}"#)
            .copied()
            .unwrap_or(0.0);
        if tls_shed >= raw_count as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tls_done = epoch.elapsed();
    let (http_times, http_open) = shed_times(http, deadline).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid, "VmRSS:");
    let peak = rss_kib(pid, "VmHWM:");
    println!(
        "{}",
        describe(
            "QUIC after TLS",
            args.quic - raw_count,
            &quic_times,
            quic_open
        )
    );
    println!(
        "QUIC in TLS: {tls_shed} of {raw_count} shed by {:.2} s",
        tls_done.as_secs_f64()
    );
    println!(
        "{}",
        describe("HTTP idle", args.http, &http_times, http_open)
    );
    println!(
        "controller after: RSS {:.1} MiB, peak {:.1} MiB",
        mib(after),
        mib(peak)
    );
    let last = |times: &[Duration]| times.iter().max().map_or(f64::NAN, Duration::as_secs_f64);
    println!(
        "SUMMARY quic={} http={} rss_rest_mib={:.1} rss_loaded_mib={:.1} rss_after_mib={:.1} peak_mib={:.1} all_open_s={:.2} quic_shed_s={:.2} quic_open={quic_open} tls_shed_s={:.2} http_shed_s={:.2} http_open={http_open}",
        args.quic,
        args.http,
        mib(rest),
        mib(loaded),
        mib(after),
        mib(peak),
        opened.as_secs_f64(),
        last(&quic_times),
        tls_done.as_secs_f64(),
        last(&http_times),
    );
    drop(controller);
    Ok(())
}
