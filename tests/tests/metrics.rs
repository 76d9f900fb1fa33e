//! Both daemons' `/metrics`, scraped and parsed while a real agent runs a
//! stack: the controller's pushes, acks and ack latency; the agent's link,
//! containers by status and outbox.

use flotilla_tests::spot::enrolled_agent;
use flotilla_tests::{scrape, web_template, AgentProcess, Api, ControllerProcess};
use std::time::Duration;

/// The address the agent said its metrics listen on.
fn metrics_address(agent: &AgentProcess) -> Option<String> {
    agent.log_text().lines().find_map(|line| {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        (value["message"] == "metrics listening")
            .then(|| value["listen"].as_str().map(str::to_owned))?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_daemons_export_what_happens() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(dir.path(), &["--heartbeat", "1"], &[])?;
    let api = Api::admin(&controller.url(""), dir.path()).await?;
    let (agent_dir, _) = enrolled_agent(&api, controller.quic_addr, "i-metrics").await?;
    let agent = AgentProcess::spawn(agent_dir.path(), &["--metrics-listen", "127.0.0.1:0"])?;
    agent.wait_log("connected to the controller", Duration::from_secs(20))?;
    let stack = api.apply(&web_template(1, "metrics")).await?;
    api.wait_for(
        &format!("/v3/alm/stack/{stack}"),
        Duration::from_secs(20),
        |s| s["stack_status"] == "CREATE_COMPLETE",
    )
    .await?;

    let c = scrape(&controller.url("/metrics")).await?;
    assert!(c["flotilla_desired_pushes_total"] >= 1.0);
    assert!(c["flotilla_desired_acks_total"] >= 1.0);
    assert!(c["flotilla_desired_ack_latency_seconds_count"] >= 1.0);
    assert!(
        c["flotilla_status_reports_total"] >= 2.0,
        "starting and running"
    );
    assert_eq!(c["flotilla_agents_connected"], 1.0);
    assert_eq!(c[r#"flotilla_agents{state="connected"}"#], 1.0);
    assert!(c["flotilla_sessions_opened_total"] >= 1.0);

    let address = metrics_address(&agent).expect("the agent says where its metrics are");
    let a = scrape(&format!("http://{address}/metrics")).await?;
    assert_eq!(a["flotilla_agent_link_connected"], 1.0);
    assert_eq!(a[r#"flotilla_agent_containers{status="running"}"#], 1.0);
    assert_eq!(
        a[r#"flotilla_agent_status_reports_total{status="running"}"#],
        1.0
    );
    assert!(a.contains_key("flotilla_agent_outbox_reports"));
    assert!(a.contains_key("flotilla_agent_reconcile_duration_seconds_count"));
    Ok(())
}
