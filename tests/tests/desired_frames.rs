//! Large desired states travel in bounded frames: twenty stacks of about
//! 200 KiB each (4 MiB together, past the frame cap) all run on one agent,
//! whose session never drops. Real controller and agent processes, real
//! QUIC, real sled; the agent's simulated runtime.

use flotilla_tests::{enroll, scrape_metrics, AgentProcess, Api, ControllerProcess};
use serde_json::{json, Value};
use std::time::Duration;

const STACKS: usize = 20;
/// Environment values per configuration, each just under the 32 KiB a
/// value may hold: about 200 KiB of container section.
const VALUES: usize = 7;
const VALUE_LEN: usize = 31_000;

/// A configuration whose container section is about 200 KiB.
fn large_template(label: &str) -> Value {
    let environment: serde_json::Map<String, Value> = (0..VALUES)
        .map(|i| {
            let fill = char::from(b'a' + u8::try_from(i % 26).unwrap_or(0));
            (
                format!("BLOB_{i}"),
                json!(fill.to_string().repeat(VALUE_LEN)),
            )
        })
        .chain([("LABEL".to_owned(), json!(label))])
        .collect();
    json!({
        "version": "2017-03-03",
        "label": label,
        "configurations": [{
            "role": "web", "flag": "Web01",
            "provision": {"instance_count": 1},
            "container": {"image": "flotilla-test/web:1", "environment_variables": environment}
        }]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_large_stacks_complete_on_one_agent_without_a_reconnect() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(
        dir.path(),
        &[
            "--heartbeat",
            "1",
            "--agent-lost-after",
            "10",
            "--placement-timeout",
            "120",
        ],
        &[],
    )?;
    let api = Api::admin(&controller.url(""), dir.path()).await?;
    let agent_dir = tempfile::tempdir()?;
    let (token, fingerprint) = api.join_token(json!({})).await?;
    let (ok, out, err) = enroll(
        agent_dir.path(),
        controller.quic_addr,
        &token,
        &fingerprint,
        "i-frames",
    )?;
    assert!(ok, "enroll failed: {out} {err}");
    let agent = AgentProcess::spawn(agent_dir.path(), &[])?;
    agent.wait_log("connected to the controller", Duration::from_secs(20))?;

    let template = large_template("v1");
    let section = template["configurations"][0]["container"].to_string().len();
    assert!(
        (200 * 1024..256 * 1024).contains(&section),
        "a container section of {section} bytes"
    );
    assert!(
        section * STACKS > flotilla_common::wire::DEFAULT_MAX_FRAME,
        "together past the frame cap"
    );
    let mut stacks = Vec::new();
    for _ in 0..STACKS {
        stacks.push(api.apply(&template).await?);
    }
    for stack in &stacks {
        api.wait_for(
            &format!("/v3/alm/stack/{stack}"),
            Duration::from_secs(120),
            |s| s["stack_status"] == "CREATE_COMPLETE",
        )
        .await?;
    }
    // Every stack's one container runs on the agent, and the generation
    // the agent acknowledged holds all twenty (over 4 MiB of sections).
    let agents = api.get("/v3/alm/agents").await?;
    let one = &agents[0];
    assert_eq!(one["state"], "connected", "{}", one["state"]);
    assert_eq!(
        one["placements"].as_array().map(Vec::len),
        Some(STACKS),
        "every stack placed"
    );
    assert_eq!(one["generation"], one["applied_generation"]);

    // An update of one stack is a new generation of all twenty parts.
    api.update(&stacks[0], &large_template("v2")).await?;
    api.wait_for(
        &format!("/v3/alm/stack/{}", stacks[0]),
        Duration::from_secs(60),
        |s| s["stack_status"] == "UPDATE_COMPLETE",
    )
    .await?;

    // One session throughout: never lost, never refused.
    let metrics = scrape_metrics(&controller.url("/metrics")).await?;
    assert_eq!(metrics.get("flotilla_sessions_opened_total"), Some(&1.0));
    assert_eq!(metrics.get("flotilla_desired_refused_total"), Some(&0.0));
    let lost = api.get("/v3/events?type=agent.lost").await?;
    assert_eq!(lost.as_array().map(Vec::len), Some(0), "{lost}");
    let logs = agent.log_text();
    assert!(!logs.contains("fleet link down"), "the link never dropped");
    assert!(!logs.contains("desired state refused"));
    agent.terminate()?;
    controller.terminate()?;
    Ok(())
}
