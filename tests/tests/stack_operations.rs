//! Operations on what a stack runs, with real binaries: a rolling restart
//! (`POST /v3/alm/stack/{id}/restart`) restarts one instance at a time,
//! the next only once the one before is back `running`, and its task says
//! SUCCESS at the end or FAILED naming the instance that did not come
//! back; stop and start reach every agent of the stack and settle their
//! tasks. Nobody but the owner may do either. (The Docker runtime's side:
//! `docker_runtime.rs`.)

use flotilla_tests::spot::enrolled_agent;
use flotilla_tests::{web_template, AgentProcess, Api, ControllerProcess};
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

/// Polls a task until it is no longer PENDING.
async fn settled(api: &Api, task_id: &str, limit: Duration) -> anyhow::Result<Value> {
    api.wait_for(&format!("/v3/tasks/{task_id}"), limit, |task| {
        task["taskStatus"] != "PENDING"
    })
    .await
}

/// `POST {stack}/{action}`: 202, then its task once it has settled.
async fn operate(api: &Api, stack: &str, action: &str) -> anyhow::Result<Value> {
    let (status, answer) = api
        .call(Method::POST, &format!("{stack}/{action}"), None)
        .await?;
    assert_eq!(status, 202, "{action}: {answer}");
    let task_id = answer["task_id"].as_str().unwrap_or_default().to_owned();
    settled(api, &task_id, Duration::from_secs(30)).await
}

/// The stack's container reports after event `after`: (instance, status).
async fn reports(api: &Api, stack: &str, after: u64) -> anyhow::Result<Vec<(String, String)>> {
    let path = format!("/v3/events?stack_id={stack}&type=container.status&since={after}");
    let events = api.get(&path).await?;
    Ok(events
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["instance_id"].as_str().unwrap_or_default().to_owned(),
                e["data"]["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

async fn latest_event(api: &Api) -> anyhow::Result<u64> {
    let events = api.get("/v3/events").await?;
    Ok(events
        .as_array()
        .and_then(|e| e.last())
        .and_then(|e| e["id"].as_u64())
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_restart_one_at_a_time() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(
        dir.path(),
        &["--heartbeat", "1", "--restart-timeout", "3"],
        &[],
    )?;
    let admin = Api::admin(&controller.url(""), dir.path()).await?;
    let mut agents = Vec::new();
    for instance in ["i-r1", "i-r2"] {
        let (agent_dir, _) = enrolled_agent(&admin, controller.quic_addr, instance).await?;
        let agent = AgentProcess::spawn(agent_dir.path(), &[])?;
        agent.wait_log("connected to the controller", Duration::from_secs(20))?;
        agents.push((agent_dir, agent));
    }
    let alice = admin.user("alice").await?;
    let pool = admin.get("/v3/alm/pools/default").await?;
    let body = serde_json::json!({"users": ["alice"], "policy": pool["policy"]});
    let (status, reply) = admin
        .call(Method::PUT, "/v3/alm/pools/default", Some(&body))
        .await?;
    assert_eq!(status, 200, "{reply}");
    let stack = alice.apply(&web_template(2, "rolling")).await?;
    alice
        .wait_for(
            &format!("/v3/alm/stack/{stack}"),
            Duration::from_secs(30),
            |s| s["stack_status"] == "CREATE_COMPLETE",
        )
        .await?;

    // Nobody else may restart it.
    let bob = admin.user("bob").await?;
    let path = format!("/v3/alm/stack/{stack}/restart");
    let (status, _) = bob.call(Method::POST, &path, None).await?;
    assert_eq!(status, 404);
    let (status, body) = alice
        .call(Method::POST, &format!("{path}?flag=Nope"), None)
        .await?;
    assert_eq!(
        (status, body["errors"][0]["code"].as_str()),
        (409, Some("unknown_flag")),
        "{body}"
    );

    let before = latest_event(&admin).await?;
    let (status, started) = alice.call(Method::POST, &path, None).await?;
    assert_eq!(status, 202, "{started}");
    let instances: Vec<&str> = started["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["instance_id"].as_str())
        .collect();
    assert_eq!(instances, ["i-r1", "i-r2"]);
    let task_id = started["task_id"].as_str().unwrap_or_default().to_owned();
    let task = settled(&alice, &task_id, Duration::from_secs(30)).await?;
    assert_eq!(task["taskStatus"], "SUCCESS", "{task}");
    assert_eq!(task["operation"], "restart");

    // The second instance went down only after the first was back.
    let seen = reports(&alice, &stack, before).await?;
    let at = |instance: &str, status: &str| {
        seen.iter()
            .position(|(i, s)| i == instance && s == status)
            .unwrap_or_else(|| panic!("no {status} from {instance} in {seen:?}"))
    };
    assert!(at("i-r1", "restarting") < at("i-r1", "running"), "{seen:?}");
    assert!(at("i-r1", "running") < at("i-r2", "restarting"), "{seen:?}");
    assert!(at("i-r2", "restarting") < at("i-r2", "running"), "{seen:?}");

    // The audit trail names it, with the order.
    let audits = alice.get("/v3/audits?action=stack.restart").await?;
    assert_eq!(
        audits[0]["changes"]["task_id"],
        task_id.as_str(),
        "{audits}"
    );
    assert_eq!(audits[0]["username"], "alice");

    // An instance that does not answer fails the restart, named, within
    // the timeout, and the instances after it are left alone.
    let (_, second) = agents.pop().expect("two agents");
    let (_, first) = agents.pop().expect("two agents");
    first.kill9()?;
    let (status, started) = alice.call(Method::POST, &path, None).await?;
    assert_eq!(status, 202, "{started}");
    let task_id = started["task_id"].as_str().unwrap_or_default().to_owned();
    let task = settled(&alice, &task_id, Duration::from_secs(30)).await?;
    assert_eq!(task["taskStatus"], "FAILED", "{task}");
    let reason = task["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("i-r1")
            && (reason.contains("not back within 3 s") || reason.contains("not connected")),
        "{reason}"
    );
    let after = reports(&alice, &stack, before).await?;
    let restarts_of_r2 = after
        .iter()
        .filter(|(i, s)| i == "i-r2" && s == "restarting")
        .count();
    assert_eq!(restarts_of_r2, 1, "i-r2 was not touched again: {after:?}");
    drop(second);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_start_reach_every_agent_and_only_the_owner() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(dir.path(), &["--heartbeat", "1"], &[])?;
    let admin = Api::admin(&controller.url(""), dir.path()).await?;
    let mut agents = Vec::new();
    for instance in ["i-s1", "i-s2"] {
        let (agent_dir, _) = enrolled_agent(&admin, controller.quic_addr, instance).await?;
        let agent = AgentProcess::spawn(agent_dir.path(), &[])?;
        agent.wait_log("connected to the controller", Duration::from_secs(20))?;
        agents.push((agent_dir, agent));
    }
    let alice = admin.user("alice").await?;
    let pool = admin.get("/v3/alm/pools/default").await?;
    let body = serde_json::json!({"users": ["alice"], "policy": pool["policy"]});
    admin
        .call(Method::PUT, "/v3/alm/pools/default", Some(&body))
        .await?;
    let stack = alice.apply(&web_template(2, "held")).await?;
    let path = format!("/v3/alm/stack/{stack}");
    alice
        .wait_for(&path, Duration::from_secs(30), |s| {
            s["stack_status"] == "CREATE_COMPLETE"
        })
        .await?;

    // Another user cannot; a stack token cannot.
    let bob = admin.user("bob").await?;
    for action in ["stop", "start"] {
        let (status, _) = bob
            .call(Method::POST, &format!("{path}/{action}"), None)
            .await?;
        assert_eq!(status, 404, "{action}");
    }
    let described = alice.get(&path).await?;
    let stack_token = flotilla_tests::token(
        &reqwest::Client::new(),
        &controller.url(""),
        &stack,
        described["auth_token"].as_str().unwrap_or_default(),
    )
    .await?;
    let as_stack = Api {
        base: controller.url(""),
        token: stack_token,
        http: reqwest::Client::new(),
    };
    let (status, _) = as_stack
        .call(Method::POST, &format!("{path}/stop"), None)
        .await?;
    assert_eq!(status, 403);

    // Stop: both instances report stopped, the task succeeds.
    let task = operate(&alice, &path, "stop").await?;
    assert_eq!(
        (task["taskStatus"].as_str(), task["operation"].as_str()),
        (Some("SUCCESS"), Some("stop")),
        "{task}"
    );
    let containers = alice.get(&format!("{path}/containers")).await?;
    let statuses: Vec<&str> = containers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["status"].as_str())
        .collect();
    assert_eq!(statuses, ["stopped", "stopped"], "{containers}");
    // A rolling restart of a stopped stack is refused.
    let (status, _) = alice
        .call(Method::POST, &format!("{path}/restart"), None)
        .await?;
    assert_eq!(status, 409);

    // Start: running again.
    let task = operate(&alice, &path, "start").await?;
    assert_eq!(task["taskStatus"], "SUCCESS", "{task}");
    let containers = alice.get(&format!("{path}/containers")).await?;
    assert!(
        containers
            .as_array()
            .is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["status"] == "running")),
        "{containers}"
    );

    // A deleted stack cannot be stopped.
    alice.call(Method::DELETE, &path, None).await?;
    let (status, body) = alice
        .call(Method::POST, &format!("{path}/stop"), None)
        .await?;
    assert_eq!(status, 409, "{body}");
    drop(agents);
    Ok(())
}
