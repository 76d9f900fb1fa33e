//! The agent started in-process with `daemon::start` (the simulated
//! runtime): it connects and runs what it is given, and its stop is a
//! signal its tasks finish on: `wait` returns once every task is gone, so
//! the same store opens again at once and a second start picks up where
//! the first left off.

use flotilla_agent::daemon::{start, Config};
use flotilla_agent::identity::Identity;
use flotilla_agent::runtime::RuntimeKind;
use flotilla_tests::{enroll, web_template, Api, ControllerProcess};
use serde_json::json;
use std::time::{Duration, Instant};

fn config(dir: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config {
        identity: Identity::load(dir)?,
        data_dir: dir.to_path_buf(),
        runtime: RuntimeKind::Simulated,
        docker: Default::default(),
        labels: Default::default(),
        max_frame: flotilla_common::wire::DEFAULT_MAX_FRAME,
        max_backoff: Duration::from_secs(2),
        gso: true,
        metrics_listen: Some("127.0.0.1:0".parse()?),
        watch: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_started_in_process_runs_stops_on_its_signal_and_starts_again(
) -> anyhow::Result<()> {
    flotilla_common::tls::install_provider();
    let controller_dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(controller_dir.path(), &["--heartbeat", "1"], &[])?;
    let api = Api::admin(&controller.url(""), controller_dir.path()).await?;
    let dir = tempfile::tempdir()?;
    let (token, fingerprint) = api.join_token(json!({})).await?;
    let (ok, out, err) = enroll(
        dir.path(),
        controller.quic_addr,
        &token,
        &fingerprint,
        "i-daemon",
    )?;
    anyhow::ensure!(ok, "{out}{err}");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = start(config(dir.path())?, async {
        let _ = stopped.await;
    })
    .await?;
    let metrics = handle
        .metrics_addr
        .ok_or_else(|| anyhow::anyhow!("no metrics address"))?;
    let stack = api.apply(&web_template(1, "daemon")).await?;
    api.wait_for(
        &format!("/v3/alm/stack/{stack}"),
        Duration::from_secs(30),
        |s| s["stack_status"] == "CREATE_COMPLETE",
    )
    .await?;
    let scraped = reqwest::get(format!("http://{metrics}/metrics")).await?;
    assert!(scraped.status().is_success());

    // The signal: every task finishes, the store is flushed and let go.
    let asked = Instant::now();
    let _ = stop.send(());
    handle.wait().await?;
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "stopped in {:?}",
        asked.elapsed()
    );
    assert!(
        reqwest::get(format!("http://{metrics}/metrics"))
            .await
            .is_err(),
        "the metrics server is gone"
    );
    api.wait_for("/v3/alm/agents", Duration::from_secs(20), |agents| {
        agents[0]["state"] != "connected"
    })
    .await?;

    // The same data dir, at once: the store opens, the agent reconnects
    // and keeps running the stack.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = start(config(dir.path())?, async {
        let _ = stopped.await;
    })
    .await?;
    api.wait_for("/v3/alm/agents", Duration::from_secs(20), |agents| {
        agents[0]["state"] == "connected"
    })
    .await?;
    let containers = api
        .get(&format!("/v3/alm/stack/{stack}/containers"))
        .await?;
    assert_eq!(containers[0]["status"], "running", "{containers}");
    let _ = stop.send(());
    handle.wait().await?;
    Ok(())
}
