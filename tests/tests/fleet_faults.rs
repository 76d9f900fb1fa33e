//! The fleet link under faults: kill -9 of either side while updates and
//! reports flow, a network partition, bad frames and a malicious agent.

use flotilla_common::wire::messages::{AgentMessage, Hello, HostFacts, StatusReport};
use flotilla_common::wire::{codes, frame, handshake, PROTOCOL_VERSION};
use flotilla_tests::{
    agent_command, enroll, raw_connection, web_template, AgentProcess, Api, ControllerProcess,
    UdpRelay,
};
use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

fn agent_by_instance<'a>(agents: &'a Value, instance: &str) -> Option<&'a Value> {
    agents
        .as_array()?
        .iter()
        .find(|a| a["instance_id"] == instance)
}

/// Enrolls an agent dir against `controller` (optionally through `via`).
async fn enrolled(
    api: &Api,
    via: std::net::SocketAddr,
    instance: &str,
) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let (token, fingerprint) = api.join_token(json!({})).await?;
    let (ok, out, err) = enroll(dir.path(), via, &token, &fingerprint, instance)?;
    anyhow::ensure!(ok, "enroll failed: {out} {err}");
    Ok(dir)
}

/// Starts a controller on fixed ports (so agents find it again after a
/// restart) in `dir`.
fn controller_at(
    dir: &std::path::Path,
    http: &str,
    quic: &str,
) -> anyhow::Result<ControllerProcess> {
    ControllerProcess::spawn(
        dir,
        &[
            "--listen",
            http,
            "--quic-listen",
            quic,
            "--heartbeat",
            "1",
            "--agent-lost-after",
            "3",
            "--replace-after",
            "120",
        ],
        &[],
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test]
async fn kill_9_of_either_side_loses_no_report_and_counts_none_twice() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let http = format!("127.0.0.1:{}", free_tcp_port()?);
    let quic = format!("127.0.0.1:{}", free_port()?);
    let mut controller = Some(controller_at(dir.path(), &http, &quic)?);
    let base = format!("http://{http}");
    let api = Api::admin(&base, dir.path()).await?;
    let quic_addr: std::net::SocketAddr = quic.parse()?;
    let instances = ["i-k1", "i-k2"];
    let mut dirs = Vec::new();
    let mut agents = Vec::new();
    for instance in instances {
        let agent_dir = enrolled(&api, quic_addr, instance).await?;
        agents.push(Some(AgentProcess::spawn(agent_dir.path(), &[])?));
        dirs.push(agent_dir);
    }
    let stack = api.apply(&web_template(2, "round-0")).await?;
    let mut rng = rand::rng();
    let rounds = 8;
    for round in 1..=rounds {
        // Update (retrying while the controller is down).
        let template = web_template(2, &format!("round-{round}"));
        let mut tries = 0;
        while api.update(&stack, &template).await.is_err() {
            tries += 1;
            anyhow::ensure!(tries < 200, "controller never came back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        match rng.random_range(0..4) {
            0 => {
                if let Some(c) = controller.take() {
                    c.kill9()?;
                }
            }
            n @ (1 | 2) => {
                let i = n - 1;
                if let Some(a) = agents[i].take() {
                    a.kill9()?;
                }
            }
            _ => {
                if let Some(c) = controller.take() {
                    c.kill9()?;
                }
                if let Some(a) = agents[0].take() {
                    a.kill9()?;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        if controller.is_none() {
            controller = Some(controller_at(dir.path(), &http, &quic)?);
        }
        for (i, agent) in agents.iter_mut().enumerate() {
            if agent.is_none() {
                *agent = Some(AgentProcess::spawn(dirs[i].path(), &[])?);
            }
        }
    }
    // Everything settles: both agents on the latest generation, the stack complete.
    let path = format!("/v3/alm/stack/{stack}");
    api.wait_for(&path, Duration::from_secs(60), |s| {
        s["stack_status"] == "UPDATE_COMPLETE"
    })
    .await?;
    api.wait_for("/v3/alm/agents", Duration::from_secs(30), |v| {
        instances.iter().all(|i| {
            agent_by_instance(v, i).is_some_and(|a| {
                a["generation"] == a["applied_generation"] && a["state"] == "connected"
            })
        })
    })
    .await?;
    // Stop the agents cleanly, let the outboxes drain first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for agent in agents.iter_mut() {
        if let Some(agent) = agent.take() {
            agent.terminate()?;
        }
    }
    let mut total = 0;
    for (i, instance) in instances.iter().enumerate() {
        let (ok, out, err) = agent_command(dirs[i].path(), &["status", "--json"])?;
        anyhow::ensure!(ok, "{err}");
        let status: Value = serde_json::from_str(&out)?;
        let last_seq = status["last_seq"].as_u64().unwrap_or(0);
        // At least the start of the final version.
        assert!(last_seq >= 2, "{instance} reported {last_seq}");
        total += last_seq;
        assert_eq!(status["outbox"], 0, "{instance}: every report acknowledged");
        let events = api
            .get(&format!(
                "/v3/events?type=container.status&instance_id={instance}&limit=10000"
            ))
            .await?;
        let seqs: Vec<u64> = events
            .as_array()
            .map(|e| e.iter().filter_map(|e| e["data"]["seq"].as_u64()).collect())
            .unwrap_or_default();
        let expected: Vec<u64> = (1..=last_seq).collect();
        assert_eq!(
            seqs, expected,
            "{instance}: every report stored once, in order"
        );
    }
    assert!(total >= 8, "the rounds produced reports to lose ({total})");
    if let Some(c) = controller.take() {
        c.terminate()?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_agent_is_lost_replaced_and_reconciles_on_heal() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(
        dir.path(),
        &[
            "--heartbeat",
            "1",
            "--agent-lost-after",
            "2",
            "--replace-after",
            "2",
        ],
        &[],
    )?;
    let api = Api::admin(&controller.url(""), dir.path()).await?;
    let relay = UdpRelay::start(controller.quic_addr).await?;
    let far_dir = enrolled(&api, relay.addr, "i-far").await?;
    let far = AgentProcess::spawn(far_dir.path(), &[])?;
    far.wait_log("connected to the controller", Duration::from_secs(20))?;
    let stack = api.apply(&web_template(1, "p")).await?;
    let path = format!("/v3/alm/stack/{stack}");
    api.wait_for(&path, Duration::from_secs(10), |s| {
        s["stack_status"] == "CREATE_COMPLETE"
    })
    .await?;
    let near_dir = enrolled(&api, controller.quic_addr, "i-near").await?;
    let near = AgentProcess::spawn(near_dir.path(), &[])?;
    near.wait_log("connected to the controller", Duration::from_secs(20))?;
    let agents = api.get("/v3/alm/agents").await?;
    assert_eq!(
        agent_by_instance(&agents, "i-far").map(|a| a["placements"].as_array().map(Vec::len)),
        Some(Some(1))
    );

    relay.set_blocked(true);
    api.wait_for("/v3/alm/agents", Duration::from_secs(15), |v| {
        agent_by_instance(v, "i-far").is_some_and(|a| a["state"] == "lost")
    })
    .await?;
    // After the re-placement delay, the slot moves to the reachable agent.
    let containers = api
        .wait_for(
            &format!("{path}/containers"),
            Duration::from_secs(20),
            |v| {
                v.as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["instance_id"] == "i-near" && c["status"] == "running")
                })
            },
        )
        .await?;
    assert!(containers.as_array().is_some_and(|c| !c.is_empty()));
    let agents = api.get("/v3/alm/agents").await?;
    assert_eq!(
        agent_by_instance(&agents, "i-near").map(|a| a["placements"][0]["stack_id"].clone()),
        Some(json!(stack))
    );

    // Heal: the far agent comes back, learns it lost the slot and stops its copy.
    relay.set_blocked(false);
    api.wait_for("/v3/alm/agents", Duration::from_secs(30), |v| {
        agent_by_instance(v, "i-far").is_some_and(|a| {
            a["state"] == "connected"
                && a["placements"] == json!([])
                && a["generation"] == a["applied_generation"]
        })
    })
    .await?;
    api.wait_for(
        &format!("{path}/containers"),
        Duration::from_secs(15),
        |v| {
            v.as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["instance_id"] == "i-far" && c["status"] == "terminated")
            })
        },
    )
    .await?;
    far.terminate()?;
    near.terminate()?;
    controller.terminate()?;
    Ok(())
}

async fn close_code(connection: &quinn::Connection) -> Option<u64> {
    match tokio::time::timeout(Duration::from_secs(10), connection.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => Some(close.error_code.into_inner()),
        _ => None,
    }
}

#[tokio::test]
async fn bad_frames_close_only_their_connection_and_a_malicious_agent_speaks_only_for_itself(
) -> anyhow::Result<()> {
    flotilla_common::tls::install_provider();
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(
        dir.path(),
        &["--heartbeat", "1", "--agent-lost-after", "5"],
        &[],
    )?;
    let api = Api::admin(&controller.url(""), dir.path()).await?;
    let good_dir = enrolled(&api, controller.quic_addr, "i-good").await?;
    let good = AgentProcess::spawn(good_dir.path(), &[])?;
    good.wait_log("connected to the controller", Duration::from_secs(20))?;
    let stack = api.apply(&web_template(1, "m1")).await?;
    let path = format!("/v3/alm/stack/{stack}");
    api.wait_for(&path, Duration::from_secs(10), |s| {
        s["stack_status"] == "CREATE_COMPLETE"
    })
    .await?;
    let evil_dir = enrolled(&api, controller.quic_addr, "i-evil").await?;

    // Garbage instead of a handshake.
    let (_e1, conn) = raw_connection(evil_dir.path(), controller.quic_addr).await?;
    let (mut send, _recv) = conn.open_bi().await?;
    send.write_all(b"GET / HTTP/1.1\r\n\r\n").await?;
    assert_eq!(
        close_code(&conn).await,
        Some(codes::PROTOCOL_ERROR.into_inner())
    );

    // An unknown protocol version, or the one before desired states came in
    // parts: the controller answers with its own and closes, naming both.
    for version in [99, PROTOCOL_VERSION - 1] {
        let (_e2, conn) = raw_connection(evil_dir.path(), controller.quic_addr).await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        handshake::send(&mut send, version).await?;
        let theirs = handshake::receive(&mut recv, version).await;
        assert_eq!(
            theirs,
            Err(handshake::HandshakeError::UnsupportedVersion {
                theirs: PROTOCOL_VERSION,
                ours: version
            })
        );
        let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
        let Ok(quinn::ConnectionError::ApplicationClosed(close)) = closed else {
            anyhow::bail!("version {version}: not closed by the controller: {closed:?}");
        };
        assert_eq!(close.error_code, codes::UNSUPPORTED_VERSION);
        let reason = String::from_utf8_lossy(&close.reason);
        assert!(
            reason.contains(&format!("protocol version {version}"))
                && reason.contains(&format!("speaks {PROTOCOL_VERSION}")),
            "{reason}"
        );
    }

    // An oversized frame after a proper handshake.
    let hello = AgentMessage::Hello(Hello {
        agent_version: "evil".into(),
        labels: BTreeMap::new(),
        generation: 0,
        facts: HostFacts::default(),
    });
    let (_e3, conn) = raw_connection(evil_dir.path(), controller.quic_addr).await?;
    let (mut send, _recv) = conn.open_bi().await?;
    handshake::send(&mut send, PROTOCOL_VERSION).await?;
    frame::write(&mut send, &hello, 1 << 20).await?;
    send.write_all(&(512u32 << 20).to_be_bytes()).await?;
    send.write_all(&[0u8; 1024]).await?;
    assert_eq!(
        close_code(&conn).await,
        Some(codes::FRAME_TOO_LARGE.into_inner())
    );

    // A frame of the right size that decodes to nothing.
    let (_e4, conn) = raw_connection(evil_dir.path(), controller.quic_addr).await?;
    let (mut send, _recv) = conn.open_bi().await?;
    handshake::send(&mut send, PROTOCOL_VERSION).await?;
    frame::write(&mut send, &hello, 1 << 20).await?;
    frame::write_payload(&mut send, &[0xFF; 64], 1 << 20).await?;
    assert_eq!(
        close_code(&conn).await,
        Some(codes::PROTOCOL_ERROR.into_inner())
    );

    // A malicious agent reports for the stack placed on the good agent.
    let (_e5, conn) = raw_connection(evil_dir.path(), controller.quic_addr).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    handshake::send(&mut send, PROTOCOL_VERSION).await?;
    frame::write(&mut send, &hello, 1 << 20).await?;
    handshake::receive(&mut recv, PROTOCOL_VERSION).await?;
    let forged = AgentMessage::Status(vec![StatusReport {
        seq: 1,
        stack_id: stack.clone(),
        flag: "Web01".into(),
        version_id: "whatever".into(),
        status: flotilla_common::status::ContainerStatus::AppCrashed,
        exit_code: Some(1),
        reason: Some("forged".into()),
        time_ms: 0,
        commit: None,
    }]);
    frame::write(&mut send, &forged, 1 << 20).await?;
    // The controller acknowledges (so the report leaves the outbox) but drops it.
    let mut acked = false;
    for _ in 0..5 {
        match tokio::time::timeout(
            Duration::from_secs(5),
            frame::read::<_, flotilla_common::wire::messages::ControllerMessage>(
                &mut recv,
                1 << 22,
            ),
        )
        .await
        {
            Ok(Ok(Some(flotilla_common::wire::messages::ControllerMessage::StatusAck {
                seq: 1,
            }))) => {
                acked = true;
                break;
            }
            Ok(Ok(Some(_))) => continue,
            _ => break,
        }
    }
    assert!(acked, "the forged report is acknowledged");
    let containers = api.get(&format!("{path}/containers")).await?;
    let rows = containers.as_array().cloned().unwrap_or_default();
    assert!(
        rows.iter()
            .all(|c| c["instance_id"] == "i-good" && c["status"] == "running"),
        "{containers}"
    );
    assert_eq!(api.get(&path).await?["stack_status"], "CREATE_COMPLETE");
    conn.close(codes::CLOSED, b"");

    // The good agent was never disturbed and still takes updates.
    let agents = api.get("/v3/alm/agents").await?;
    assert_eq!(
        agent_by_instance(&agents, "i-good").map(|a| a["state"].clone()),
        Some(json!("connected"))
    );
    api.update(&stack, &web_template(1, "m2")).await?;
    api.wait_for(&path, Duration::from_secs(10), |s| {
        s["stack_status"] == "UPDATE_COMPLETE"
    })
    .await?;
    let logs = controller.log_text();
    for expected in [
        "protocol error",
        "frame",
        "status for a stack never placed here",
    ] {
        assert!(
            logs.contains(expected),
            "controller log mentions {expected:?}"
        );
    }
    let (status, _) = api.call(Method::GET, "/healthz", None).await?;
    assert_eq!(status, 200);
    good.terminate()?;
    controller.terminate()?;
    Ok(())
}
