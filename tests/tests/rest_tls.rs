//! The REST API over HTTPS (`--tls self`): operators reach it with the
//! fleet CA as their root, plain HTTP gets nowhere, and an agent whose link
//! is cut reports its spot notice over HTTPS, verifying the controller with
//! the CA it pinned at enrollment.

use flotilla_tests::metadata::FakeAws;
use flotilla_tests::spot::enrolled_agent;
use flotilla_tests::{web_template, AgentProcess, Api, ControllerProcess, UdpRelay};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_report_over_https_verified_with_the_pinned_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller =
        ControllerProcess::spawn(dir.path(), &["--heartbeat", "1", "--tls", "self"], &[])?;
    let ca = std::fs::read(dir.path().join("pki/ca.pem"))?;
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .build()?;
    let api = Api::admin_with(http, &controller.https_url(""), dir.path()).await?;
    // Without the CA, or over plain HTTP, there is no API.
    assert!(reqwest::get(controller.https_url("/healthz"))
        .await
        .is_err());
    let plain = reqwest::get(controller.url("/healthz")).await;
    assert!(!plain.is_ok_and(|r| r.status().is_success()));

    let relay = UdpRelay::start(controller.quic_addr).await?;
    let aws = FakeAws::start("i-tls", "c5.large", "spot").await?;
    let (agent_dir, agent_id) = enrolled_agent(&api, relay.addr, "i-tls").await?;
    let agent = AgentProcess::spawn(
        agent_dir.path(),
        &[
            "--cloud",
            "aws",
            "--metadata-url",
            &aws.url,
            "--spot-poll-interval",
            "200ms",
        ],
    )?;
    agent.wait_log("connected to the controller", Duration::from_secs(20))?;
    let stack = api.apply(&web_template(1, "tls")).await?;
    api.wait_for(
        &format!("/v3/alm/stack/{stack}"),
        Duration::from_secs(20),
        |s| s["stack_status"] == "CREATE_COMPLETE",
    )
    .await?;

    relay.set_blocked(true);
    let deadline = (chrono::Utc::now() + chrono::Duration::seconds(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    aws.notice("terminate", &deadline);
    let shutdown = api
        .wait_for(
            &format!("/v3/events?stack_id={stack}&type=spot.shutdown"),
            Duration::from_secs(15),
            |v| v.as_array().is_some_and(|e| !e.is_empty()),
        )
        .await
        .map_err(|err| err.context(agent.log_text()))?;
    assert_eq!(shutdown[0]["data"]["source"], "http", "{shutdown}");
    let seen = api.get(&format!("/v3/alm/agents/{agent_id}")).await?;
    assert_eq!(seen["state"], "terminating", "{seen}");
    Ok(())
}
