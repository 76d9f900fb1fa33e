//! Runtime benchmark: with the image already local, the time from a REST
//! apply until the controller reports the container `running`, against a
//! bare create + start of the same image through the Docker API, in one
//! run; then the agent's idle RSS and CPU with 10 containers managed.
//!
//! `cargo run --release -p flotilla-tests --bin runtime_bench`

use anyhow::Context;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use flotilla_tests::{ensure_image, Api, DockerFleet};
use serde_json::json;
use std::time::{Duration, Instant};

const IMAGE: &str = "flotilla-test/web:1";
const ROUNDS: usize = 9;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Bare engine: create + start, as `docker run -d` does. With `same`, the
/// container gets the settings the agent gives its own (its network, an
/// init process), so the comparison isolates what Flotilla adds.
async fn bare(
    docker: &bollard::Docker,
    round: usize,
    same: bool,
    network: &str,
) -> anyhow::Result<f64> {
    let name = format!("flotilla-bench-bare-{round}-{same}");
    let started = Instant::now();
    let body = ContainerCreateBody {
        image: Some(IMAGE.into()),
        host_config: same.then(|| bollard::models::HostConfig {
            network_mode: Some(network.into()),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            body,
        )
        .await?;
    docker
        .start_container(
            &created.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await?;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await?;
    Ok(elapsed)
}

fn template(configs: usize) -> serde_json::Value {
    let configurations: Vec<_> = (1..=configs)
        .map(|i| {
            json!({"role": "web", "flag": format!("Web{i:02}"), "provision": {"instance_count": 1},
                   "container": {"image": IMAGE, "stop_grace_period": "2s"}})
        })
        .collect();
    json!({"version": "2017-03-03", "label": "bench", "configurations": configurations})
}

/// Through Flotilla: REST apply until the controller shows `running`.
async fn flotilla(api: &Api) -> anyhow::Result<f64> {
    let started = Instant::now();
    let stack = api.apply(&template(1)).await?;
    let path = format!("/v3/alm/stack/{stack}/containers");
    loop {
        let containers = api.get(&path).await?;
        if containers[0]["status"] == "running" {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "never running: {containers}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let (status, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/v3/alm/stack/{stack}"),
            None,
        )
        .await?;
    anyhow::ensure!(status == 202, "delete answered {status}");
    api.wait_for(
        &format!("/v3/alm/stack/{stack}"),
        Duration::from_secs(60),
        |s| s["stack_status"] == "DELETE_COMPLETE",
    )
    .await?;
    Ok(elapsed)
}

fn proc_stat(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of /proc/pid/stat (after the name: 12 and 13).
    let ticks = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    Ok((rss, ticks))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ensure_image(IMAGE)?;
    let docker = bollard::Docker::connect_with_local_defaults()?;
    let fleet = DockerFleet::start(
        "bench-agent",
        &[],
        &[("RUST_LOG", "warn,flotilla_controller::server=info")],
    )
    .await?;
    let api = &fleet.api;
    let agent = fleet.agent.as_ref().context("no agent")?;
    let network = fleet.network.clone();

    // Warm every path once (the agent creates its network), then
    // alternate so all see the same machine state.
    flotilla(api).await?;
    bare(&docker, 0, false, &network).await?;
    bare(&docker, 0, true, &network).await?;
    let mut plain_ms = Vec::new();
    let mut bare_ms = Vec::new();
    let mut flotilla_ms = Vec::new();
    for round in 1..=ROUNDS {
        plain_ms.push(bare(&docker, round, false, &network).await?);
        bare_ms.push(bare(&docker, round, true, &network).await?);
        flotilla_ms.push(flotilla(api).await?);
    }
    let (p, b, f) = (
        median(plain_ms.clone()),
        median(bare_ms.clone()),
        median(flotilla_ms.clone()),
    );
    println!("bare create+start, default settings (ms): {plain_ms:.1?}");
    println!("bare create+start, the agent's settings (ms): {bare_ms:.1?}");
    println!("flotilla REST apply → running at the controller (ms): {flotilla_ms:.1?}");
    println!(
        "median: bare {p:.1} ms (default settings), {b:.1} ms (agent's settings); flotilla {f:.1} ms; ratio {:.2}x (same settings), {:.2}x (default settings)",
        f / b,
        f / p
    );

    // Ten containers managed, then idle.
    let stack = api.apply(&template(10)).await?;
    api.wait_for(
        &format!("/v3/alm/stack/{stack}"),
        Duration::from_secs(120),
        |s| s["stack_status"] == "CREATE_COMPLETE",
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = agent.pid();
    let (_, before) = proc_stat(pid)?;
    let window = Duration::from_secs(30);
    tokio::time::sleep(window).await;
    let (rss, after) = proc_stat(pid)?;
    let hz = 100.0;
    let cpu = (after - before) as f64 / hz / window.as_secs_f64() * 100.0;
    println!(
        "agent idle with 10 containers: RSS {:.1} MiB, CPU {cpu:.2}% of one core over {} s",
        rss as f64 / 1024.0,
        window.as_secs()
    );
    println!(
        "SUMMARY apply_to_running_ms={f:.1} bare_same_settings_ms={b:.1} bare_default_ms={p:.1} ratio_same={:.2} ratio_default={:.2} agent_idle_rss_mib={:.1} agent_idle_cpu_pct={cpu:.2}",
        f / b,
        f / p,
        rss as f64 / 1024.0
    );
    let (status, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/v3/alm/stack/{stack}"),
            None,
        )
        .await?;
    anyhow::ensure!(status == 202);
    api.wait_for(
        &format!("/v3/alm/stack/{stack}"),
        Duration::from_secs(120),
        |s| s["stack_status"] == "DELETE_COMPLETE",
    )
    .await?;
    Ok(())
}
