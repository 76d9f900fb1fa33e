//! Spot notices end to end: real controller and agents, a local stand-in
//! for the AWS metadata service, the real Docker engine for the drain.

use flotilla_tests::metadata::FakeAws;
use flotilla_tests::spot::enrolled_agent;
use flotilla_tests::{web_template, AgentProcess, Api, ControllerProcess, UdpRelay};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_notice_moves_the_work_on_demand_then_drains_gracefully() -> anyhow::Result<()> {
    let outcome = flotilla_tests::spot::run("e2e").await?;
    let f = outcome.figures;
    println!(
        "notice recorded after {} ms; replacement running after {} ms; old container stopped after {} ms; drained after {} ms",
        f.recorded_ms, f.replacement_running_ms, f.old_stopped_ms, f.drained_ms
    );
    // The controller knew within the poll interval (1 s) and some slack.
    assert!(
        f.recorded_ms < 1_500,
        "notice recorded after {} ms",
        f.recorded_ms
    );
    // Make before break: the old container stopped after its replacement ran.
    assert!(f.replacement_running_ms <= f.old_stopped_ms, "{f:?}");
    assert!(f.old_stopped_ms <= f.drained_ms, "{f:?}");

    let agent = &outcome.agent_after_notice;
    assert_eq!(agent["state"], "terminating", "{agent}");
    assert_eq!(agent["drain"]["reason"], "spot", "{agent}");
    assert_eq!(agent["drain"]["cloud"], "aws", "{agent}");
    assert_eq!(agent["drain"]["action"], "terminate", "{agent}");
    assert!(agent["drain"]["deadline"].is_string(), "{agent}");
    // The labels came from the metadata service.
    assert_eq!(agent["labels"]["lifecycle"], "spot", "{agent}");
    assert_eq!(agent["labels"]["instance_type"], "m5.large", "{agent}");
    assert_eq!(outcome.agent_at_end["state"], "drained");
    assert!(outcome.agent_at_end["drain"]["drained"].is_string());
    assert!(outcome.agent_at_end["placements"]
        .as_array()
        .is_some_and(Vec::is_empty));

    let events = &outcome.stack_events;
    assert_eq!(of_kind(events, "spot.shutdown").len(), 1, "recorded once");
    let moved = of_kind(events, "placement.moved");
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(moved[0]["data"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("terminating")));
    // The spot container went through its SIGTERM handler (exit 42).
    assert_eq!(outcome.handler_output.trim(), "handled");
    let terminated: Vec<&Value> = of_kind(events, "container.status")
        .into_iter()
        .filter(|e| {
            e["instance_id"] == outcome.spot_instance.as_str()
                && e["data"]["status"] == "terminated"
        })
        .collect();
    assert_eq!(terminated.len(), 1, "{terminated:?}");
    assert_eq!(terminated[0]["data"]["exit_code"], 42);
    // The stack went back to complete through an update.
    let statuses: Vec<&str> = of_kind(events, "stack.status")
        .iter()
        .filter_map(|e| e["data"]["to"].as_str())
        .collect();
    assert_eq!(
        statuses,
        ["CREATE_COMPLETE", "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE"]
    );
    assert_eq!(outcome.spot_containers_left, 0);
    assert!(!outcome.on_demand_instance.is_empty());
    Ok(())
}

/// Events of one type for a stack.
async fn count(api: &Api, stack: &str, kind: &str) -> anyhow::Result<Vec<Value>> {
    Ok(api
        .get(&format!("/v3/events?stack_id={stack}&type={kind}"))
        .await?
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn in_secs(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_link_cut_the_notice_goes_over_rest_and_is_recorded_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(dir.path(), &["--heartbeat", "1"], &[])?;
    let api = Api::admin(&controller.url(""), dir.path()).await?;
    let relay = UdpRelay::start(controller.quic_addr).await?;
    let aws = FakeAws::start("i-cut", "c5.large", "spot").await?;
    let (agent_dir, agent_id) = enrolled_agent(&api, relay.addr, "i-cut").await?;
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
    let stack = api.apply(&web_template(1, "cut")).await?;
    api.wait_for(
        &format!("/v3/alm/stack/{stack}"),
        Duration::from_secs(20),
        |s| s["stack_status"] == "CREATE_COMPLETE",
    )
    .await?;

    relay.set_blocked(true);
    aws.notice("terminate", &in_secs(30));
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

    // The link comes back: the agent sends the notice again (it was never
    // acknowledged there); the controller knows it already.
    relay.set_blocked(false);
    api.wait_for(
        "/v3/events?type=agent.drained&instance_id=i-cut",
        Duration::from_secs(60),
        |v| v.as_array().is_some_and(|e| !e.is_empty()),
    )
    .await?;
    agent.wait_log("lifecycle report acknowledged", Duration::from_secs(30))?;
    assert_eq!(count(&api, &stack, "spot.shutdown").await?.len(), 1);
    let drained = api
        .get("/v3/events?type=agent.drained&instance_id=i-cut")
        .await?;
    assert_eq!(drained.as_array().map(Vec::len), Some(1), "{drained}");
    let text = controller.log_text();
    assert!(
        text.contains("\"applied\":\"Duplicate\""),
        "the link's copy of the notice was taken as a duplicate"
    );
    // The notice came with the agent's own token: its time was honoured.
    assert!(seen["drain"]["deadline"].is_string(), "{seen}");
    // An admin can undo even a cloud notice's drain (a notice may be false).
    let (status, body) = api
        .call(
            Method::DELETE,
            &format!("/v3/alm/agents/{agent_id}/drain"),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let after = api.get(&format!("/v3/alm/agents/{agent_id}")).await?;
    assert!(after["drain"].is_null(), "{after}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_drain_moves_the_work_first_is_undone_and_the_agent_removed(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(dir.path(), &["--heartbeat", "1"], &[])?;
    let api = Api::admin(&controller.url(""), dir.path()).await?;
    let mut agents = Vec::new();
    for instance in ["i-op-a", "i-op-b"] {
        let (agent_dir, agent_id) = enrolled_agent(&api, controller.quic_addr, instance).await?;
        let process = AgentProcess::spawn(agent_dir.path(), &[])?;
        process.wait_log("connected to the controller", Duration::from_secs(20))?;
        agents.push((agent_dir, agent_id, process));
    }
    let stack = api.apply(&web_template(1, "op")).await?;
    let path = format!("/v3/alm/stack/{stack}");
    api.wait_for(&path, Duration::from_secs(20), |s| {
        s["stack_status"] == "CREATE_COMPLETE"
    })
    .await?;
    let placed_on = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["placements"].as_array().is_some_and(|p| !p.is_empty()))
            .filter_map(|a| a["agent_id"].as_str().map(str::to_owned))
            .collect()
    };
    let before = placed_on(&api.get("/v3/alm/agents").await?);
    assert_eq!(before.len(), 1);
    let from = before[0].clone();

    // Bad requests change nothing.
    let drain_path = format!("/v3/alm/agents/{from}/drain");
    let (status, body) = api
        .call(
            Method::POST,
            &drain_path,
            Some(&json!({"deadline_secs": 0})),
        )
        .await?;
    assert_eq!(
        (status, body["errors"][0]["code"].as_str()),
        (400, Some("invalid_field")),
        "{body}"
    );
    let (status, _) = api
        .call(Method::POST, &drain_path, Some(&json!({"deadline": 5})))
        .await?;
    assert_eq!(status, 400);
    let (status, _) = api
        .call(Method::POST, "/v3/alm/agents/ag-nobody/drain", None)
        .await?;
    assert_eq!(status, 404);
    assert_eq!(
        api.get(&format!("/v3/alm/agents/{from}")).await?["state"],
        "connected"
    );

    let (status, body) = api.call(Method::POST, &drain_path, None).await?;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["state"], "draining", "{body}");
    assert_eq!(body["drain"]["reason"], "operator", "{body}");
    let drained = api
        .wait_for(
            &format!("/v3/alm/agents/{from}"),
            Duration::from_secs(20),
            |a| a["state"] == "drained",
        )
        .await?;
    assert!(drained["placements"].as_array().is_some_and(Vec::is_empty));
    let after = placed_on(&api.get("/v3/alm/agents").await?);
    assert_eq!(after.len(), 1);
    assert_ne!(after[0], from, "the work moved");
    api.wait_for(&path, Duration::from_secs(20), |s| {
        s["stack_status"] == "UPDATE_COMPLETE"
    })
    .await?;
    // Make before break: the replacement ran before the old one stopped.
    let events = api
        .get(&format!(
            "/v3/events?stack_id={stack}&type=container.status"
        ))
        .await?;
    let position = |on_old_agent: bool, status: &str| {
        events.as_array().and_then(|e| {
            e.iter().position(|e| {
                (e["data"]["agent_id"] == from.as_str()) == on_old_agent
                    && e["data"]["status"] == status
            })
        })
    };
    let old_stopping = position(true, "stopping").expect("the old container stopped");
    let new_running = position(false, "running").expect("the replacement ran");
    assert!(new_running < old_stopping, "{events}");

    let (status, body) = api.call(Method::DELETE, &drain_path, None).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "connected", "{body}");
    assert!(body.get("drain").is_none(), "{body}");
    let kinds: Vec<String> = api
        .get(&format!(
            "/v3/events?instance_id={}",
            agent_instance(&api, &from).await?
        ))
        .await?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect();
    for kind in ["agent.drain", "agent.drained", "agent.undrain"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }

    // Removed from the fleet: disconnected for good, out of the list.
    let (status, body) = api
        .call(Method::DELETE, &format!("/v3/alm/agents/{from}"), None)
        .await?;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("revoked")),
        "{body}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = api.get(&format!("/v3/alm/agents/{from}")).await?;
    assert_eq!(seen["state"], "revoked", "it cannot come back: {seen}");
    let revoked = api.get("/v3/audits?action=agent.revoke").await?;
    assert!(
        revoked.as_array().is_some_and(|entries| entries.len() == 1
            && entries[0]["target"] == from.as_str()
            && entries[0]["username"] == "admin"),
        "{revoked}"
    );
    let listed = api.get("/v3/alm/agents").await?;
    assert!(
        listed
            .as_array()
            .is_some_and(|a| a.iter().all(|a| a["agent_id"] != from.as_str())),
        "{listed}"
    );
    let all = api.get("/v3/alm/agents?include_revoked=true").await?;
    assert_eq!(all.as_array().map(Vec::len), Some(2));
    assert!(controller
        .log_text()
        .contains("this agent's certificate was revoked"));
    Ok(())
}

async fn agent_instance(api: &Api, agent_id: &str) -> anyhow::Result<String> {
    Ok(
        api.get(&format!("/v3/alm/agents/{agent_id}")).await?["instance_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_controller_down_the_notice_arrives_after_reconnect_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let http = format!("127.0.0.1:{}", flotilla_tests::free_tcp_port()?);
    let quic = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let args = [
        "--heartbeat",
        "1",
        "--listen",
        &http,
        "--quic-listen",
        &quic,
    ];
    let controller = ControllerProcess::spawn(dir.path(), &args, &[])?;
    let api = Api::admin(&controller.url(""), dir.path()).await?;
    let aws = FakeAws::start("i-down", "c5.large", "spot").await?;
    let (agent_dir, agent_id) = enrolled_agent(&api, controller.quic_addr, "i-down").await?;
    let agent = AgentProcess::spawn(
        agent_dir.path(),
        &["--cloud", "aws", "--metadata-url", &aws.url],
    )?;
    agent.wait_log("connected to the controller", Duration::from_secs(20))?;
    let stack = api.apply(&web_template(1, "down")).await?;
    api.wait_for(
        &format!("/v3/alm/stack/{stack}"),
        Duration::from_secs(20),
        |s| s["stack_status"] == "CREATE_COMPLETE",
    )
    .await?;

    controller.terminate()?;
    aws.notice("terminate", &in_secs(30));
    agent.wait_log("cloud notice", Duration::from_secs(10))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let controller = ControllerProcess::spawn(dir.path(), &args, &[])?;
    let api = Api::admin(&controller.url(""), dir.path()).await?;
    let shutdown = api
        .wait_for(
            &format!("/v3/events?stack_id={stack}&type=spot.shutdown"),
            Duration::from_secs(20),
            |v| v.as_array().is_some_and(|e| !e.is_empty()),
        )
        .await?;
    assert_eq!(shutdown.as_array().map(Vec::len), Some(1), "{shutdown}");
    api.wait_for(
        &format!("/v3/alm/agents/{agent_id}"),
        Duration::from_secs(20),
        |a| a["state"] == "terminating" && a["drain"]["action"] == "terminate",
    )
    .await?;
    // The stack has no other agent: its instance stays until the agent's
    // own drain, which then reports drained.
    api.wait_for(
        "/v3/events?type=agent.drained&instance_id=i-down",
        Duration::from_secs(60),
        |v| v.as_array().is_some_and(|e| e.len() == 1),
    )
    .await?;
    assert_eq!(count(&api, &stack, "spot.shutdown").await?.len(), 1);

    // Restarted after draining (the VM has not gone yet): nothing starts.
    let starts = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["data"]["status"] == "starting")
            .count()
    };
    let before = starts(&count(&api, &stack, "container.status").await?);
    agent.terminate()?;
    let agent = AgentProcess::spawn(
        agent_dir.path(),
        &["--cloud", "aws", "--metadata-url", &aws.url],
    )?;
    agent.wait_log("this agent has drained", Duration::from_secs(10))?;
    agent.wait_log("connected to the controller", Duration::from_secs(20))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        starts(&count(&api, &stack, "container.status").await?),
        before,
        "a drained agent starts nothing"
    );
    drop(controller);
    Ok(())
}
