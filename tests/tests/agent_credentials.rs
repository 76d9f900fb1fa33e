//! Credentials that reach only what they must, with the real controller
//! and agents: a stack's token drains only an agent pinned to its stack
//! (with the server's deadline) and reports statuses only for its own
//! placements; Flotilla's agent reports its notices with its own
//! per-session token; hellos past the label and fact bounds are refused.

use flotilla_common::wire::messages::{AgentMessage, ControllerMessage, Hello, HostFacts};
use flotilla_common::wire::{bounds, codes, frame, handshake, PROTOCOL_VERSION};
use flotilla_tests::spot::enrolled_agent;
use flotilla_tests::{enroll, raw_connection, web_template, AgentProcess, Api, ControllerProcess};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// The same API as `api`, with another bearer.
fn as_bearer(api: &Api, token: &str) -> Api {
    Api {
        http: api.http.clone(),
        base: api.base.clone(),
        token: token.to_owned(),
    }
}

async fn stack_token(api: &Api, stack: &str) -> anyhow::Result<String> {
    let stack = api.get(&format!("/v3/alm/stack/{stack}")).await?;
    Ok(stack["auth_token"].as_str().unwrap_or_default().to_owned())
}

fn at(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn millis(time: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(time.as_str()?)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_token_cannot_drain_a_shared_agent_and_an_agent_speaks_only_for_itself(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(dir.path(), &["--heartbeat", "1"], &[])?;
    let api = Api::admin(&controller.url(""), dir.path()).await?;
    let (shared_dir, shared_id) = enrolled_agent(&api, controller.quic_addr, "i-shared").await?;
    let shared = AgentProcess::spawn(shared_dir.path(), &[])?;
    shared.wait_log("connected to the controller", Duration::from_secs(20))?;
    let placed = api.apply(&web_template(1, "placed")).await?;
    api.wait_for(
        &format!("/v3/alm/stack/{placed}"),
        Duration::from_secs(30),
        |s| s["stack_status"] == "CREATE_COMPLETE",
    )
    .await?;
    let other = api.apply(&web_template(0, "other")).await?;
    let (join, fingerprint) = api
        .join_token(json!({"stack_id": other, "flag": "Web01"}))
        .await?;
    let pinned_dir = tempfile::tempdir()?;
    let (ok, out, err) = enroll(
        pinned_dir.path(),
        controller.quic_addr,
        &join,
        &fingerprint,
        "i-pinned",
    )?;
    anyhow::ensure!(ok, "{out}{err}");
    let pinned_id = out.split_whitespace().nth(2).unwrap_or_default().to_owned();
    let placed_api = as_bearer(&api, &stack_token(&api, &placed).await?);
    let other_api = as_bearer(&api, &stack_token(&api, &other).await?);

    // Neither the token of a stack placed on the shared agent nor another
    // stack's drains it, whatever time it names.
    for (stack_api, stack) in [(&placed_api, &placed), (&other_api, &other)] {
        let (status, body) = stack_api
            .call(
                Method::POST,
                "/v3/event/spot/shutdown",
                Some(&json!({"stack_id": stack, "instance_id": "i-shared", "time": at(-60)})),
            )
            .await?;
        assert_eq!(status, 403, "{body}");
    }
    let containers_before = api
        .get(&format!("/v3/alm/stack/{placed}/containers"))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let agent = api.get(&format!("/v3/alm/agents/{shared_id}")).await?;
    assert!(agent["drain"].is_null(), "{agent}");
    assert_eq!(agent["state"], "connected", "{agent}");

    // Another stack's token cannot report for the shared agent, over either
    // endpoint; the real agent's status stays.
    let (status, body) = other_api
        .call(
            Method::POST,
            "/v3/event/container/status",
            Some(&json!({"stack_id": other, "instance_id": "i-shared", "flag": "Web01", "status": "app-crashed"})),
        )
        .await?;
    assert_eq!(status, 404, "{body}");
    let (status, body) = other_api
        .call(
            Method::POST,
            "/v3/alm/agent/container_status",
            Some(&json!({"stack_id": other, "instance_id": "i-shared", "status": "app-crashed"})),
        )
        .await?;
    assert_eq!(status, 404, "{body}");
    let other_rows = api
        .get(&format!("/v3/alm/stack/{other}/containers"))
        .await?;
    assert_eq!(other_rows, json!([]), "nothing stored");
    let containers_after = api
        .get(&format!("/v3/alm/stack/{placed}/containers"))
        .await?;
    assert_eq!(containers_after, containers_before);

    // The stack's token drains the agent pinned to it, with the server's
    // deadline (the time in the past is ignored); an admin undoes it.
    let (status, body) = other_api
        .call(
            Method::POST,
            "/v3/event/spot/shutdown",
            Some(&json!({"stack_id": other, "instance_id": "i-pinned", "time": at(-60)})),
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    let agent = api.get(&format!("/v3/alm/agents/{pinned_id}")).await?;
    assert_eq!(agent["drain"]["reason"], "spot", "{agent}");
    assert!(agent["drain"]["deadline"].is_null(), "{agent}");
    let (status, body) = api
        .call(
            Method::DELETE,
            &format!("/v3/alm/agents/{pinned_id}/drain"),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert!(body["drain"].is_null(), "{body}");

    // The agent's own REST token: 0600, speaks for its agent only.
    let token_path = shared_dir.path().join("identity").join("rest-token");
    let mode = std::fs::metadata(&token_path)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first_token = std::fs::read_to_string(&token_path)?;
    let agent_api = as_bearer(&api, first_token.trim());
    let (status, body) = agent_api
        .call(
            Method::POST,
            "/v3/event/spot/shutdown",
            Some(&json!({"instance_id": "i-pinned", "time": at(60)})),
        )
        .await?;
    assert_eq!(status, 403, "{body}");
    let (status, _) = agent_api
        .call(
            Method::GET,
            &format!("/v3/alm/agent/config?stack_id={placed}&flag=Web01"),
            None,
        )
        .await?;
    assert_eq!(status, 401, "the agent's token opens nothing else");
    let agent = api.get(&format!("/v3/alm/agents/{pinned_id}")).await?;
    assert!(agent["drain"].is_null(), "{agent}");

    // A new session replaces the token; the old one stops working.
    shared.terminate()?;
    let shared = AgentProcess::spawn(shared_dir.path(), &[])?;
    shared.wait_log("connected to the controller", Duration::from_secs(20))?;
    let second_token = std::fs::read_to_string(&token_path)?;
    assert_ne!(second_token, first_token);
    let (status, body) = agent_api
        .call(
            Method::POST,
            "/v3/event/spot/shutdown",
            Some(&json!({"instance_id": "i-shared"})),
        )
        .await?;
    assert_eq!(status, 401, "{body}");

    // With its current token the agent's notice drains it, its time honoured.
    let deadline = at(120);
    let (status, body) = as_bearer(&api, second_token.trim())
        .call(
            Method::POST,
            "/v3/event/spot/shutdown",
            Some(&json!({"instance_id": "i-shared", "cloud": "aws", "time": deadline})),
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    let agent = api.get(&format!("/v3/alm/agents/{shared_id}")).await?;
    assert_eq!(agent["drain"]["reason"], "spot", "{agent}");
    assert_eq!(
        millis(&agent["drain"]["deadline"]),
        millis(&json!(deadline)),
        "{agent}"
    );
    shared.terminate()?;
    controller.terminate()?;
    Ok(())
}

fn hello(labels: BTreeMap<String, String>, hostname: &str) -> AgentMessage {
    AgentMessage::Hello(Hello {
        agent_version: "0.0.0-test".into(),
        labels,
        generation: 0,
        facts: HostFacts {
            hostname: hostname.into(),
            ..HostFacts::default()
        },
    })
}

fn labels(count: usize, key_len: usize, value_len: usize) -> BTreeMap<String, String> {
    (0..count)
        .map(|i| {
            let key = format!("{i:0>width$}", width = key_len);
            (key, "v".repeat(value_len))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hellos_past_the_label_and_fact_bounds_are_refused() -> anyhow::Result<()> {
    flotilla_common::tls::install_provider();
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(dir.path(), &[], &[])?;
    let api = Api::admin(&controller.url(""), dir.path()).await?;
    let (agent_dir, agent_id) = enrolled_agent(&api, controller.quic_addr, "i-labels").await?;
    let refused = [
        hello(labels(bounds::MAX_LABELS + 1, 4, 1), "h"),
        hello(labels(1, bounds::MAX_LABEL_KEY + 1, 1), "h"),
        hello(labels(1, 4, bounds::MAX_LABEL_VALUE + 1), "h"),
        hello(BTreeMap::new(), &"h".repeat(bounds::MAX_HOSTNAME + 1)),
    ];
    for message in refused {
        let (_endpoint, conn) = raw_connection(agent_dir.path(), controller.quic_addr).await?;
        let (mut send, _recv) = conn.open_bi().await?;
        handshake::send(&mut send, PROTOCOL_VERSION).await?;
        frame::write(&mut send, &message, 1 << 20).await?;
        let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await?;
        match closed {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(close.error_code, codes::LIMIT_EXCEEDED);
                let reason = String::from_utf8_lossy(&close.reason);
                assert!(
                    reason.contains("at most") || reason.contains("keys are"),
                    "{reason}"
                );
            }
            other => anyhow::bail!("closed otherwise: {other}"),
        }
    }
    let agent = api.get(&format!("/v3/alm/agents/{agent_id}")).await?;
    assert_eq!(agent["state"], "enrolled", "{agent}");
    assert!(
        agent["labels"].as_object().is_none_or(|l| l.is_empty()),
        "{agent}"
    );

    // At the bounds the session is taken, and the welcome hands the token.
    let full = labels(
        bounds::MAX_LABELS,
        bounds::MAX_LABEL_KEY,
        bounds::MAX_LABEL_VALUE,
    );
    let (_endpoint, conn) = raw_connection(agent_dir.path(), controller.quic_addr).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    handshake::send(&mut send, PROTOCOL_VERSION).await?;
    frame::write(&mut send, &hello(full, "h"), 1 << 20).await?;
    handshake::receive(&mut recv, PROTOCOL_VERSION).await?;
    match frame::read::<_, ControllerMessage>(&mut recv, 1 << 22).await? {
        Some(ControllerMessage::Welcome(welcome)) => {
            assert_eq!(welcome.agent_id, agent_id);
            assert!(!welcome.agent_token.is_empty());
            assert!(!format!("{welcome:?}").contains(&welcome.agent_token));
        }
        other => anyhow::bail!("no welcome: {other:?}"),
    }
    let agent = api.get(&format!("/v3/alm/agents/{agent_id}")).await?;
    assert_eq!(agent["state"], "connected", "{agent}");
    assert_eq!(
        agent["labels"].as_object().map(|l| l.len()),
        Some(bounds::MAX_LABELS)
    );
    conn.close(codes::CLOSED, b"");
    controller.terminate()?;
    Ok(())
}
