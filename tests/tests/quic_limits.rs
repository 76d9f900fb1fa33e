//! The fleet endpoint under stalled connections: real controller and agent
//! processes, real QUIC. Connections that stall in the TLS handshake, after
//! it, or one byte into the preamble are shed at the handshake deadline; the
//! cap on unauthenticated connections refuses, and near it only validated
//! addresses (QUIC Retry) get in; a real agent enrolls and connects meanwhile.

use flotilla_common::wire::codes;
use flotilla_tests::hostile::{self, open_stalled, RawInitials, Stall, Stalled};
use flotilla_tests::{enroll, scrape_metrics, AgentProcess, Api, ControllerProcess};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ADMITTED: &str = r#"flotilla_fleet_admissions_total{outcome="admitted"}"#;
const RETRIED: &str = r#"flotilla_fleet_admissions_total{outcome="retried"}"#;
const REFUSED: &str = r#"flotilla_fleet_admissions_total{outcome="refused"}"#;
const OPEN: &str = "flotilla_fleet_unauthenticated_connections";
const TLS_SHED: &str = r#"flotilla_fleet_connections_shed_total{reason="tls_timeout"}"#;
const PREAMBLE_SHED: &str = r#"flotilla_fleet_connections_shed_total{reason="preamble_timeout"}"#;
const CAP_SHED: &str = r#"flotilla_fleet_connections_shed_total{reason="unauthenticated_cap"}"#;

/// One sample (0 when the series does not exist yet).
async fn metric(controller: &ControllerProcess, name: &str) -> anyhow::Result<f64> {
    let samples = scrape_metrics(&controller.url("/metrics")).await?;
    Ok(samples.get(name).copied().unwrap_or(0.0))
}

/// Polls a sample until `check` accepts it.
async fn wait_metric(
    controller: &ControllerProcess,
    name: &str,
    limit: Duration,
    check: impl Fn(f64) -> bool,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    loop {
        let value = metric(controller, name).await?;
        if check(value) {
            return Ok(value);
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "{name} is {value} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The controller's JSON log lines with this message.
fn log_lines(controller: &ControllerProcess, message: &str) -> Vec<Value> {
    controller
        .log_text()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == message)
        .collect()
}

/// Enrolls a fresh agent dir (off the runtime: the agent binary runs to
/// completion) and starts the agent; returns once it has connected.
async fn real_agent(
    api: &Api,
    controller: &ControllerProcess,
    instance: &'static str,
) -> anyhow::Result<(tempfile::TempDir, AgentProcess)> {
    let dir = tempfile::tempdir()?;
    let (token, fingerprint) = api.join_token(json!({})).await?;
    let (path, quic) = (dir.path().to_owned(), controller.quic_addr);
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || enroll(&path, quic, &token, &fingerprint, instance))
            .await??;
    anyhow::ensure!(ok, "enroll failed: {out} {err}");
    let agent = AgentProcess::spawn(dir.path(), &[])?;
    let started = Instant::now();
    while !agent.log_text().contains("connected to the controller") {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the agent did not connect:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((dir, agent))
}

/// The stalled connection was closed by the controller's deadline: with
/// TIMED_OUT, not before half the limit, and within it plus `slack`.
fn assert_shed_by_deadline(
    stalled: &Stalled,
    elapsed: Duration,
    error: &quinn::ConnectionError,
    limit: Duration,
    slack: Duration,
) {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, codes::TIMED_OUT, "{close:?}");
        }
        other => panic!("closed by {other:?}, not by the deadline"),
    }
    assert!(
        elapsed >= limit / 2 && elapsed <= limit + slack,
        "shed {elapsed:?} after its handshake (limit {limit:?}, opened {:?} ago)",
        stalled.opened.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_agent_gets_in_while_1000_connections_stall_and_they_are_shed_in_time(
) -> anyhow::Result<()> {
    // Long enough for all 1,000 to be open at once on a loaded machine
    // (debug builds take 10 s to open them on two idle cores, 90 s on
    // busy ones).
    let limit = Duration::from_secs(120);
    let slack = Duration::from_secs(20);
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(
        dir.path(),
        // quinn's own idle timeout (lost-after + heartbeat) stays beyond the
        // deadline, so the deadline is what sheds them.
        &[
            "--quic-handshake-timeout",
            "120",
            "--heartbeat",
            "1",
            "--agent-lost-after",
            "150",
        ],
        &[],
    )?;
    let api = Api::admin(&controller.url(""), dir.path()).await?;
    let quic = controller.quic_addr;
    let fingerprint = controller.ca_fingerprint.clone();

    // Below the Retry threshold (512 of 1024): handshakes that never finish.
    let raw_count = 200;
    let _raw = RawInitials::send(quic, &fingerprint, raw_count)?;
    let raw_sent = Instant::now();
    wait_metric(&controller, ADMITTED, Duration::from_secs(10), |v| {
        v >= raw_count as f64
    })
    .await?;
    // Then 800 that finish TLS and stall; past 512 open they are asked to
    // Retry first (quinn answers it), and still get in under the cap.
    let (_endpoints, stalled) = open_stalled(
        quic,
        &fingerprint,
        800,
        &[Stall::AfterTls, Stall::OnePreambleByte],
        64,
    )
    .await?;
    let all_open = raw_sent.elapsed();
    eprintln!("1000 stalled connections open in {all_open:?}");
    let open = metric(&controller, OPEN).await?;
    assert!(
        open >= 1000.0,
        "{open} unauthenticated open after {all_open:?}"
    );
    assert!(
        metric(&controller, RETRIED).await? >= 1.0,
        "Retry near the cap"
    );

    let (_agent_dir, agent) = real_agent(&api, &controller, "i-under-siege").await?;
    let still_stalled = stalled
        .iter()
        .filter(|s| s.connection.close_reason().is_none())
        .count();
    assert_eq!(
        still_stalled,
        stalled.len(),
        "the agent got in while every stalled connection was open"
    );

    for one in &stalled {
        let (elapsed, error) = tokio::time::timeout(limit + slack, one.shed()).await?;
        assert_shed_by_deadline(one, elapsed, &error, limit, slack);
    }
    // The handshakes that never finished went by the same deadline.
    let left = (limit + slack).saturating_sub(raw_sent.elapsed());
    wait_metric(&controller, TLS_SHED, left, |v| v >= raw_count as f64).await?;
    wait_metric(&controller, PREAMBLE_SHED, slack, |v| v >= 800.0).await?;
    wait_metric(&controller, OPEN, slack, |v| v == 0.0).await?;

    // The agent's session outlived the flood.
    let agents = api.get("/v3/alm/agents").await?;
    let me = agents
        .as_array()
        .and_then(|all| all.iter().find(|a| a["instance_id"] == "i-under-siege"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(me["state"], "connected", "{agents}");
    assert!(agent.log_text().contains("connected to the controller"));

    // A flood is a few lines, not a thousand.
    let single = log_lines(&controller, "fleet connection shed");
    assert!(
        (2..=20).contains(&single.len()),
        "{} single shed lines",
        single.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_refuses_and_near_it_only_validated_addresses_get_in() -> anyhow::Result<()> {
    let limit = Duration::from_secs(10);
    let slack = Duration::from_secs(15);
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(
        dir.path(),
        &[
            "--quic-max-unauthenticated",
            "8",
            "--quic-retry-above",
            "50",
            "--quic-handshake-timeout",
            "10",
            "--heartbeat",
            "1",
        ],
        &[],
    )?;
    let api = Api::admin(&controller.url(""), dir.path()).await?;
    let quic = controller.quic_addr;
    let fingerprint = controller.ca_fingerprint.clone();
    let short = Duration::from_secs(10);

    // Below half the cap: admitted without Retry.
    let _first = RawInitials::send(quic, &fingerprint, 4)?;
    wait_metric(&controller, ADMITTED, short, |v| v == 4.0).await?;
    // At half: unvalidated addresses are asked to Retry; these never
    // answer, so they hold nothing.
    let _second = RawInitials::send(quic, &fingerprint, 4)?;
    wait_metric(&controller, RETRIED, short, |v| v == 4.0).await?;
    assert_eq!(metric(&controller, ADMITTED).await?, 4.0);
    assert_eq!(metric(&controller, OPEN).await?, 4.0);

    // Clients that answer the Retry get in, up to the cap.
    let (endpoints, stalled) =
        open_stalled(quic, &fingerprint, 4, &[Stall::OnePreambleByte], 4).await?;
    assert_eq!(metric(&controller, RETRIED).await?, 8.0);
    assert_eq!(metric(&controller, ADMITTED).await?, 8.0);
    assert_eq!(metric(&controller, OPEN).await?, 8.0);

    // At the cap: refused, even with a validated address.
    let config = hostile::enroll_config(&fingerprint)?;
    let refused = Stalled::open(&endpoints[0], quic, config, Stall::AfterTls).await;
    let error = refused
        .err()
        .and_then(|err| err.downcast::<quinn::ConnectionError>().ok());
    match &error {
        Some(quinn::ConnectionError::ConnectionClosed(close)) => assert_eq!(
            close.error_code,
            quinn::TransportErrorCode::CONNECTION_REFUSED,
            "{close:?}"
        ),
        other => panic!("not refused: {other:?}"),
    }
    assert_eq!(metric(&controller, REFUSED).await?, 1.0);
    assert_eq!(metric(&controller, CAP_SHED).await?, 1.0);
    let cap_lines: Vec<Value> = log_lines(&controller, "fleet connection shed")
        .into_iter()
        .filter(|line| line["reason"] == "unauthenticated_cap")
        .collect();
    assert_eq!(cap_lines.len(), 1, "{cap_lines:?}");
    assert_eq!(cap_lines[0]["level"], "WARN");
    assert!(cap_lines[0]["remote"].is_string());

    // The deadline frees every slot, and a real agent gets in.
    for one in &stalled {
        let (elapsed, error) = tokio::time::timeout(limit + slack, one.shed()).await?;
        assert_shed_by_deadline(one, elapsed, &error, limit, slack);
    }
    wait_metric(&controller, TLS_SHED, slack, |v| v == 4.0).await?;
    wait_metric(&controller, OPEN, slack, |v| v == 0.0).await?;
    let (_agent_dir, _agent) = real_agent(&api, &controller, "i-after-the-cap").await?;

    // Four TLS timeouts in one window: one line with an address, then one
    // summary with the other three.
    let tls_lines = log_lines(&controller, "fleet connection shed")
        .into_iter()
        .filter(|line| line["reason"] == "tls_timeout")
        .count();
    assert_eq!(tls_lines, 1);
    let started = Instant::now();
    loop {
        let summary = log_lines(&controller, "more fleet connections shed")
            .into_iter()
            .find(|line| line["reason"] == "tls_timeout");
        if let Some(summary) = summary {
            assert_eq!(summary["count"], 3, "{summary}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no summary line"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
