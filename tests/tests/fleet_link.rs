//! The fleet link end to end: real controller and agent processes, real
//! QUIC with mutual TLS over loopback, real sled stores.

use flotilla_tests::{enroll, web_template, AgentProcess, Api, ControllerProcess};
use reqwest::Method;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const FAST: &[&str] = &[
    "--heartbeat",
    "1",
    "--agent-lost-after",
    "10",
    "--replace-after",
    "60",
    "--placement-timeout",
    "60",
];

async fn controller(
    dir: &std::path::Path,
    args: &[&str],
) -> anyhow::Result<(ControllerProcess, Api)> {
    let controller = ControllerProcess::spawn(dir, args, &[])?;
    let api = Api::admin(&controller.url(""), dir).await?;
    Ok((controller, api))
}

/// Enrolls an agent in a fresh dir and starts it.
async fn agent(
    api: &Api,
    quic: std::net::SocketAddr,
    instance: &str,
    extra: &[&str],
) -> anyhow::Result<(tempfile::TempDir, AgentProcess)> {
    let dir = tempfile::tempdir()?;
    let (token, fingerprint) = api.join_token(json!({})).await?;
    let (ok, out, err) = enroll(dir.path(), quic, &token, &fingerprint, instance)?;
    assert!(ok, "enroll failed: {out} {err}");
    let process = AgentProcess::spawn(dir.path(), extra)?;
    process.wait_log("connected to the controller", Duration::from_secs(20))?;
    Ok((dir, process))
}

fn agent_by_instance<'a>(agents: &'a Value, instance: &str) -> Option<&'a Value> {
    agents
        .as_array()?
        .iter()
        .find(|a| a["instance_id"] == instance)
}

fn stack_status(path_value: &Value) -> &str {
    path_value["stack_status"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn enrollment_succeeds_once_and_every_refusal_is_clear() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (controller, api) = controller(dir.path(), FAST).await?;
    let quic = controller.quic_addr;
    let (token, fingerprint) = api.join_token(json!({"max_uses": 1})).await?;
    assert_eq!(fingerprint, controller.ca_fingerprint);

    let a = tempfile::tempdir()?;
    let (ok, out, err) = enroll(a.path(), quic, &token, &fingerprint, "i-aaa")?;
    assert!(ok, "{out}{err}");
    assert!(out.contains("enrolled as ag-"), "{out}");
    let key = a.path().join("identity/agent.key");
    assert_eq!(
        std::fs::metadata(&key)?.permissions().mode() & 0o777,
        0o600,
        "private key is 0600"
    );
    assert!(
        !controller.log_text().contains(&token),
        "the join token is never logged"
    );

    let refusals: Vec<(String, String, &str)> = vec![
        (token.clone(), fingerprint.clone(), "used up"),
        ("fjt_made_up".into(), fingerprint.clone(), "unknown"),
        (
            token.clone(),
            format!("sha256:{}", "0".repeat(64)),
            "does not match",
        ),
    ];
    for (token, fingerprint, expected) in refusals {
        let other = tempfile::tempdir()?;
        let (ok, _, err) = enroll(other.path(), quic, &token, &fingerprint, "i-bbb")?;
        assert!(!ok, "{expected}: enrollment should fail");
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(
            !other.path().join("identity/agent.key").exists(),
            "nothing saved on refusal"
        );
    }
    let (short, _) = api.join_token(json!({"ttl_secs": 1})).await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let other = tempfile::tempdir()?;
    let (ok, _, err) = enroll(other.path(), quic, &short, &fingerprint, "i-ccc")?;
    assert!(!ok && err.contains("expired"), "{err}");
    let (revoked, _) = api.join_token(json!({})).await?;
    let tokens = api.get("/v3/alm/agent/join-token").await?;
    let id = tokens
        .as_array()
        .and_then(|t| t.iter().find(|t| t["state"] == "active"))
        .and_then(|t| t["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/v3/alm/agent/join-token/{id}"),
            None,
        )
        .await?;
    assert_eq!(status, 200);
    let (ok, _, err) = enroll(other.path(), quic, &revoked, &fingerprint, "i-ccc")?;
    assert!(!ok && err.contains("revoked"), "{err}");

    // The controller logged each refusal too.
    let logs = controller.log_text();
    for reason in [
        "join token used up",
        "join token unknown",
        "join token expired",
        "join token revoked",
    ] {
        assert!(logs.contains(reason), "controller log names {reason:?}");
    }
    assert!(
        logs.contains("TLS handshake"),
        "the wrong-fingerprint attempt is logged"
    );

    // A CA file works as well as a fingerprint.
    let (by_file, _) = api.join_token(json!({})).await?;
    let other = tempfile::tempdir()?;
    let ca_file = dir.path().join("pki/ca.pem");
    let (ok, out, err) = flotilla_tests::agent_command(
        other.path(),
        &[
            "--instance-id",
            "i-ddd",
            "enroll",
            "--controller",
            &quic.to_string(),
            "--join-token",
            &by_file,
            "--ca-file",
            &ca_file.to_string_lossy(),
        ],
    )?;
    assert!(ok, "{out}{err}");

    // The enrolled agent connects with its certificate.
    let process = AgentProcess::spawn(a.path(), &[])?;
    process.wait_log("connected to the controller", Duration::from_secs(20))?;
    let agents = api
        .wait_for("/v3/alm/agents", Duration::from_secs(10), |v| {
            agent_by_instance(v, "i-aaa").is_some_and(|a| a["state"] == "connected")
        })
        .await?;
    let facts = &agent_by_instance(&agents, "i-aaa").unwrap_or(&Value::Null)["facts"];
    assert!(facts["cpus"].as_u64().unwrap_or(0) >= 1, "{facts}");
    assert!(
        facts["memory_total_bytes"].as_u64().unwrap_or(0) > 0,
        "{facts}"
    );
    process.terminate()?;
    controller.terminate()?;
    Ok(())
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (controller, api) = controller(dir.path(), FAST).await?;
    let a = tempfile::tempdir()?;
    let (token, fingerprint) = api.join_token(json!({})).await?;
    assert!(
        enroll(
            a.path(),
            controller.quic_addr,
            &token,
            &fingerprint,
            "i-forged"
        )?
        .0
    );
    // Replace the certificate with one from a CA of the attacker's own.
    let rogue_key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["ag-forged.agents.flotilla".to_owned()])?;
    params.is_ca = rcgen::IsCa::NoCa;
    let rogue = params.self_signed(&rogue_key)?;
    std::fs::write(a.path().join("identity/agent.crt"), rogue.der().as_ref())?;
    std::fs::write(
        a.path().join("identity/agent.key"),
        rogue_key.serialize_der(),
    )?;
    let process = AgentProcess::spawn(a.path(), &[])?;
    process.wait_log("fleet link down", Duration::from_secs(20))?;
    assert!(!process.log_text().contains("connected to the controller"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !controller.log_text().contains("TLS handshake") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        controller.log_text().contains("TLS handshake"),
        "the controller logs the refusal"
    );
    let agents = api.get("/v3/alm/agents").await?;
    assert_eq!(
        agent_by_instance(&agents, "i-forged").map(|a| a["state"].clone()),
        Some(json!("enrolled"))
    );
    Ok(())
}

#[tokio::test]
async fn desired_state_is_pushed_acked_and_resynced_after_reconnect() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (controller, api) = controller(dir.path(), FAST).await?;
    let (agent_dir, process) = agent(
        &api,
        controller.quic_addr,
        "i-one",
        &["--label", "lifecycle=on-demand"],
    )
    .await?;
    let stack = api.apply(&web_template(1, "v1")).await?;
    let path = format!("/v3/alm/stack/{stack}");
    api.wait_for(&path, Duration::from_secs(10), |s| {
        stack_status(s) == "CREATE_COMPLETE"
    })
    .await?;
    let containers = api.get(&format!("{path}/containers")).await?;
    assert_eq!(containers[0]["instance_id"], "i-one");
    assert_eq!(containers[0]["status"], "running");
    assert_eq!(containers[0]["flag"], "Web01");
    let agents = api.get("/v3/alm/agents").await?;
    let one = agent_by_instance(&agents, "i-one")
        .cloned()
        .unwrap_or_default();
    assert_eq!(one["generation"], 1, "{one}");
    assert_eq!(one["applied_generation"], 1, "{one}");
    assert_eq!(one["labels"]["lifecycle"], "on-demand");
    assert_eq!(one["placements"][0]["stack_id"], stack.as_str());

    // Agent down; the template changes; the agent comes back and catches up.
    process.terminate()?;
    api.wait_for("/v3/alm/agents", Duration::from_secs(10), |v| {
        agent_by_instance(v, "i-one").is_some_and(|a| a["state"] == "lost")
    })
    .await?;
    let v2 = api.update(&stack, &web_template(1, "v2")).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack_status(&api.get(&path).await?), "UPDATE_IN_PROGRESS");
    let process = AgentProcess::spawn(agent_dir.path(), &[])?;
    api.wait_for(&path, Duration::from_secs(20), |s| {
        stack_status(s) == "UPDATE_COMPLETE"
    })
    .await?;
    let agents = api.get("/v3/alm/agents").await?;
    let one = agent_by_instance(&agents, "i-one")
        .cloned()
        .unwrap_or_default();
    assert_eq!(one["generation"], 2, "{one}");
    assert_eq!(one["applied_generation"], 2, "{one}");
    assert_eq!(one["state"], "connected", "{one}");
    let containers = api.get(&format!("{path}/containers")).await?;
    assert_eq!(containers[0]["version_id"], v2.as_str());

    // Delete: the agent drops the container, reports it, and the stack completes.
    let (status, _) = api.call(Method::DELETE, &path, None).await?;
    assert_eq!(status, 202);
    api.wait_for(&path, Duration::from_secs(20), |s| {
        stack_status(s) == "DELETE_COMPLETE"
    })
    .await?;
    let events = api
        .get(&format!(
            "/v3/events?stack_id={stack}&type=container.status"
        ))
        .await?;
    let last = events
        .as_array()
        .and_then(|e| e.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["data"]["status"], "terminated");
    let agents = api.get("/v3/alm/agents").await?;
    assert_eq!(
        agent_by_instance(&agents, "i-one").map(|a| a["placements"].clone()),
        Some(json!([]))
    );
    process.terminate()?;
    controller.terminate()?;
    Ok(())
}
