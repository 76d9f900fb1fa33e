//! Published-port benchmark: requests per second and latency through a
//! port the agent routes (its nftables table), against the same image
//! published by Docker (`docker run -p`, which for 127.0.0.1 goes through
//! docker-proxy), and straight to the container's address, measured with
//! `wrk` (Debian's `wrk`) in one run. Each target gets a warm-up run, then
//! the measured runs; the medians are printed.
//!
//! `cargo run --release -p flotilla-tests --bin ports_bench -- [--seconds 10] [--rounds 3]`

use anyhow::Context;
use flotilla_tests::{agent_containers, docker, ensure_image, free_tcp_port, DockerFleet};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

const IMAGE: &str = "flotilla-test/web:1";

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// A wrk latency figure (`523.00us`, `1.20ms`, `2.01s`) in milliseconds.
fn millis(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn wrk(url: &str, seconds: u64) -> anyhow::Result<Run> {
    let output = Command::new("wrk")
        .args(["-t2", "-c16", &format!("-d{seconds}s"), "--latency", url])
        .output()
        .context("cannot run wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
            .map(str::to_owned)
    };
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in {text}"))?;
    let p50_ms = field("50%").and_then(|v| millis(&v)).context("no p50")?;
    let p99_ms = field("99%").and_then(|v| millis(&v)).context("no p99")?;
    anyhow::ensure!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "errors: {text}"
    );
    Ok(Run {
        rps,
        p50_ms,
        p99_ms,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn measure(name: &str, url: &str, seconds: u64, rounds: usize) -> anyhow::Result<Run> {
    wrk(url, 2)?;
    let runs: Vec<Run> = (0..rounds)
        .map(|_| wrk(url, seconds))
        .collect::<anyhow::Result<_>>()?;
    let run = Run {
        rps: median(runs.iter().map(|r| r.rps).collect()),
        p50_ms: median(runs.iter().map(|r| r.p50_ms).collect()),
        p99_ms: median(runs.iter().map(|r| r.p99_ms).collect()),
    };
    println!(
        "{name:<28} {:>10.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms",
        run.rps, run.p50_ms, run.p99_ms
    );
    Ok(run)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let option = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let seconds = option("--seconds", 10);
    let rounds = usize::try_from(option("--rounds", 3)).unwrap_or(3).max(1);
    ensure_image(IMAGE)?;
    let fleet = DockerFleet::start(
        "bench-ports",
        &[],
        &[("RUST_LOG", "warn,flotilla_controller::server=info")],
    )
    .await?;
    let routed = free_tcp_port()?;
    let template = json!({
        "version": "2017-03-03",
        "label": "ports bench",
        "configurations": [{"role": "web", "flag": "Web01", "provision": {"instance_count": 1},
            "container": {"image": IMAGE, "ports": [format!("127.0.0.1:{routed}:80/tcp")]}}]
    });
    let stack = fleet.api.apply(&template).await?;
    fleet
        .api
        .wait_for(
            &format!("/v3/alm/stack/{stack}"),
            Duration::from_secs(60),
            |s| s["stack_status"] == "CREATE_COMPLETE",
        )
        .await?;
    let agent_container = agent_containers(&fleet.agent_id)?.remove(0);
    let direct_ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &agent_container,
    ])?;
    let published = free_tcp_port()?;
    let name = format!("flotilla-bench-docker-{}", std::process::id());
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "-p",
        &format!("127.0.0.1:{published}:80"),
        IMAGE,
    ])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "wrk -t2 -c16, {rounds} runs of {seconds} s each (medians), busybox httpd behind each"
    );
    let result = (|| -> anyhow::Result<()> {
        let docker_run = measure(
            "Docker (-p 127.0.0.1)",
            &format!("http://127.0.0.1:{published}/"),
            seconds,
            rounds,
        )?;
        let agent_run = measure(
            "agent route (127.0.0.1)",
            &format!("http://127.0.0.1:{routed}/"),
            seconds,
            rounds,
        )?;
        measure(
            "container address (no NAT)",
            &format!("http://{}/", direct_ip.lines().next().unwrap_or_default()),
            seconds,
            rounds,
        )?;
        println!(
            "agent / Docker: throughput {:.2}x, p99 {:+.3} ms",
            agent_run.rps / docker_run.rps,
            agent_run.p99_ms - docker_run.p99_ms
        );
        Ok(())
    })();
    let _ = docker(&["rm", "-f", &name]);
    result
}
