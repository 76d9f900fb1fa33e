//! The Docker runtime end to end: real controller, real agent, the real
//! Docker engine, an image built locally from Debian's busybox-static.

use flotilla_tests::{
    agent_containers, docker, ensure_image, free_tcp_port, AgentProcess, Api, DockerFleet,
};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

const IMAGE: &str = "flotilla-test/web:1";

async fn fleet(instance: &str) -> anyhow::Result<DockerFleet> {
    ensure_image(IMAGE)?;
    DockerFleet::start(
        instance,
        &["--heartbeat", "1", "--placement-timeout", "60"],
        &[],
    )
    .await
}

fn template(container: Value) -> Value {
    json!({
        "version": "2017-03-03",
        "label": "docker test",
        "configurations": [{"role": "web", "flag": "Web01", "provision": {"instance_count": 1}, "container": container}]
    })
}

fn web(port: u16, stage: &str) -> Value {
    json!({
        "image": IMAGE,
        "environment_variables": {"STAGE": stage},
        "ports": [format!("127.0.0.1:{port}:80/tcp")],
        "labels": {"team": "web"},
        "stop_grace_period": "5s",
        "health_check": {"http": {"path": "/health", "port": 80}, "interval": "300ms", "timeout": "1s", "retries": 3}
    })
}

async fn status_of(api: &Api, stack: &str, want: &[&str]) -> anyhow::Result<Value> {
    api.wait_for(
        &format!("/v3/alm/stack/{stack}"),
        Duration::from_secs(60),
        |s| want.iter().any(|w| s["stack_status"] == *w),
    )
    .await
}

/// Every container status reported for a stack, oldest first.
async fn reported_statuses(api: &Api, stack: &str) -> anyhow::Result<Vec<String>> {
    Ok(api
        .container_reports(stack)
        .await?
        .into_iter()
        .map(|(status, _)| status)
        .collect())
}

fn inspect(id: &str, format: &str) -> anyhow::Result<String> {
    docker(&["inspect", "-f", format, id])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_update_and_delete_run_real_containers() -> anyhow::Result<()> {
    let f = fleet("i-docker-1").await?;
    let port = free_tcp_port()?;
    let stack = f.api.apply(&template(web(port, "one"))).await?;
    let described = status_of(&f.api, &stack, &["CREATE_COMPLETE", "CREATE_FAILED"]).await?;
    assert_eq!(described["stack_status"], "CREATE_COMPLETE", "{described}");
    let ids = agent_containers(&f.agent_id)?;
    assert_eq!(ids.len(), 1);
    let id = &ids[0];
    assert!(inspect(id, "{{.Config.Env}}")?.contains("STAGE=one"));
    let labels = inspect(id, "{{json .Config.Labels}}")?;
    for expected in [
        "\"flotilla.stack\"",
        &stack,
        "\"team\":\"web\"",
        "flotilla.spec-hash",
        "flotilla.generation",
    ] {
        assert!(labels.contains(expected), "{labels}");
    }
    let name = inspect(id, "{{.Name}}")?;
    assert!(
        name.starts_with(&format!("/flotilla-{}-{stack}-Web01-", f.agent_id)),
        "{name}"
    );
    let page = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await?
        .text()
        .await?;
    assert!(page.contains("Hello from a Flotilla container"), "{page}");
    let containers = f
        .api
        .get(&format!("/v3/alm/stack/{stack}/containers"))
        .await?;
    assert_eq!(containers[0]["status"], "running");
    assert_eq!(containers[0]["instance_id"], "i-docker-1");

    // Update: a new container replaces the old one.
    f.api.update(&stack, &template(web(port, "two"))).await?;
    let described = status_of(&f.api, &stack, &["UPDATE_COMPLETE", "UPDATE_FAILED"]).await?;
    assert_eq!(described["stack_status"], "UPDATE_COMPLETE", "{described}");
    let ids = agent_containers(&f.agent_id)?;
    assert_eq!(ids.len(), 1, "the old container is gone");
    assert_ne!(&ids[0], id);
    assert!(inspect(&ids[0], "{{.Config.Env}}")?.contains("STAGE=two"));
    let statuses = reported_statuses(&f.api, &stack).await?;
    assert_eq!(statuses, ["starting", "running", "updating", "running"]);

    // Delete: stopped with SIGTERM, removed, reported.
    let (status, _) = f
        .api
        .call(Method::DELETE, &format!("/v3/alm/stack/{stack}"), None)
        .await?;
    assert_eq!(status, 202);
    status_of(&f.api, &stack, &["DELETE_COMPLETE"]).await?;
    assert!(agent_containers(&f.agent_id)?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_update_rolls_back_and_failures_are_named() -> anyhow::Result<()> {
    let f = fleet("i-docker-2").await?;
    let port = free_tcp_port()?;
    let stack = f.api.apply(&template(web(port, "good"))).await?;
    status_of(&f.api, &stack, &["CREATE_COMPLETE"]).await?;
    let before = agent_containers(&f.agent_id)?;
    // The new version dies at once: the old one is put back.
    let mut broken = web(port, "broken");
    broken["command"] = json!(["sh", "-c", "exit 3"]);
    f.api.update(&stack, &template(broken)).await?;
    let described = status_of(&f.api, &stack, &["UPDATE_FAILED", "UPDATE_COMPLETE"]).await?;
    assert_eq!(described["stack_status"], "UPDATE_FAILED");
    let reason = described["stack_status_reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("start-failure")
            && reason.contains("exited with code 3")
            && reason.contains("rolled back"),
        "{reason}"
    );
    assert_eq!(
        agent_containers(&f.agent_id)?,
        before,
        "the previous container runs on"
    );
    assert_eq!(inspect(&before[0], "{{.State.Running}}")?, "true");
    let page = reqwest::get(format!("http://127.0.0.1:{port}/")).await?;
    assert!(page.status().is_success());

    // A probe that never passes: probe-failure, nothing left running.
    let mut unhealthy = web(free_tcp_port()?, "unhealthy");
    unhealthy["health_check"] = json!({"http": {"path": "/health", "port": 81}, "interval": "200ms", "timeout": "300ms", "retries": 2});
    let second = f.api.apply(&template(unhealthy)).await?;
    let described = status_of(&f.api, &second, &["CREATE_FAILED", "CREATE_COMPLETE"]).await?;
    assert_eq!(described["stack_status"], "CREATE_FAILED");
    assert!(
        described["stack_status_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("probe-failure"),
        "{described}"
    );

    // A missing image: start-failure with the engine's reason; the first
    // stack keeps running.
    let third = f
        .api
        .apply(&template(json!({"image": "flotilla-test/missing:404"})))
        .await?;
    let described = status_of(&f.api, &third, &["CREATE_FAILED", "CREATE_COMPLETE"]).await?;
    assert_eq!(described["stack_status"], "CREATE_FAILED");
    let reason = described["stack_status_reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains("start-failure") && reason.contains("flotilla-test/missing"),
        "{reason}"
    );
    // A port already taken by the first stack.
    let fourth = f
        .api
        .apply(&template(
            json!({"image": IMAGE, "ports": [format!("127.0.0.1:{port}:80")]}),
        ))
        .await?;
    let described = status_of(&f.api, &fourth, &["CREATE_FAILED", "CREATE_COMPLETE"]).await?;
    assert_eq!(described["stack_status"], "CREATE_FAILED");
    assert!(
        described["stack_status_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("allocated"),
        "{described}"
    );
    assert_eq!(
        inspect(&before[0], "{{.State.Running}}")?,
        "true",
        "other containers are untouched"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_container_ends_app_crashed() -> anyhow::Result<()> {
    let f = fleet("i-docker-3").await?;
    let spec = json!({
        "image": IMAGE,
        "command": ["sh", "-c", "sleep 1; exit 7"],
        "restart": {"policy": "on-failure", "max_attempts": 2}
    });
    let stack = f.api.apply(&template(spec)).await?;
    let containers = f
        .api
        .wait_for(
            &format!("/v3/alm/stack/{stack}/containers"),
            Duration::from_secs(60),
            |c| c[0]["status"] == "app-crashed",
        )
        .await?;
    assert_eq!(containers[0]["exit_code"], 7);
    let reason = containers[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("exited with code 7") && reason.contains("gave up after 2 restarts"),
        "{reason}"
    );
    let statuses = reported_statuses(&f.api, &stack).await?;
    assert_eq!(
        statuses.iter().filter(|s| *s == "restarting").count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(statuses.last().map(String::as_str), Some("app-crashed"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_kill_9_adopts_without_restarting_and_never_duplicates() -> anyhow::Result<()> {
    let mut f = fleet("i-docker-4").await?;
    let port = free_tcp_port()?;
    let stack = f.api.apply(&template(web(port, "steady"))).await?;
    status_of(&f.api, &stack, &["CREATE_COMPLETE"]).await?;
    let id = agent_containers(&f.agent_id)?.remove(0);
    let started = inspect(&id, "{{.State.StartedAt}}")?;

    // Steady: kill -9 and restart; the container is adopted, not restarted.
    if let Some(agent) = f.agent.take() {
        agent.kill9()?;
    }
    let agent = AgentProcess::spawn_with(f.agent_dir.path(), &["--docker-network", &f.network])?;
    agent.wait_log("adopted", Duration::from_secs(20))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(agent_containers(&f.agent_id)?, vec![id.clone()]);
    assert_eq!(
        inspect(&id, "{{.State.StartedAt}}")?,
        started,
        "not restarted"
    );

    // During an update: kill -9 at once, restart; exactly one container, the new version.
    f.api
        .update(&stack, &template(web(port, "during-update")))
        .await?;
    tokio::time::sleep(Duration::from_millis(150)).await;
    agent.kill9()?;
    let agent = AgentProcess::spawn_with(f.agent_dir.path(), &["--docker-network", &f.network])?;
    status_of(&f.api, &stack, &["UPDATE_COMPLETE"]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ids = agent_containers(&f.agent_id)?;
    assert_eq!(ids.len(), 1, "no duplicate, no orphan: {ids:?}");
    assert!(inspect(&ids[0], "{{.Config.Env}}")?.contains("STAGE=during-update"));

    // During a create: a second stack, kill -9 right away.
    let other_port = free_tcp_port()?;
    let second = f
        .api
        .apply(&template(web(other_port, "during-create")))
        .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    agent.kill9()?;
    let agent = AgentProcess::spawn_with(f.agent_dir.path(), &["--docker-network", &f.network])?;
    status_of(&f.api, &second, &["CREATE_COMPLETE"]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ids = agent_containers(&f.agent_id)?;
    assert_eq!(ids.len(), 2, "one container per stack: {ids:?}");
    agent.terminate()?;
    // SIGTERM of the agent leaves the containers running.
    for id in agent_containers(&f.agent_id)? {
        assert_eq!(inspect(&id, "{{.State.Running}}")?, "true");
    }
    drop(f.controller);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_restart_stop_start_and_read_logs_through_the_controller() -> anyhow::Result<()> {
    let f = fleet("i-docker-5").await?;
    let port = free_tcp_port()?;
    let stack = f.api.apply(&template(web(port, "ops"))).await?;
    status_of(&f.api, &stack, &["CREATE_COMPLETE"]).await?;
    let id = agent_containers(&f.agent_id)?.remove(0);
    let containers = format!("/v3/alm/stack/{stack}/containers");
    let base = format!("/v3/alm/stack/{stack}/instances/i-docker-5");
    // Some output to read: httpd -v logs each request.
    reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await?
        .text()
        .await?;

    let (status, body) = f
        .api
        .call(Method::POST, &format!("{base}/stop"), None)
        .await?;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "accepted");
    f.api
        .wait_for(&containers, Duration::from_secs(30), |c| {
            c[0]["status"] == "stopped"
        })
        .await?;
    assert_eq!(inspect(&id, "{{.State.Running}}")?, "false");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        inspect(&id, "{{.State.Running}}")?,
        "false",
        "an operator stop is not undone by the restart policy"
    );

    let (status, _) = f
        .api
        .call(Method::POST, &format!("{base}/start"), None)
        .await?;
    assert_eq!(status, 202);
    f.api
        .wait_for(&containers, Duration::from_secs(30), |c| {
            c[0]["status"] == "running"
        })
        .await?;
    assert_eq!(inspect(&id, "{{.State.Running}}")?, "true");
    let started = inspect(&id, "{{.State.StartedAt}}")?;

    let (status, _) = f
        .api
        .call(Method::POST, &format!("{base}/restart"), None)
        .await?;
    assert_eq!(status, 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while inspect(&id, "{{.State.StartedAt}}")? == started && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(inspect(&id, "{{.State.StartedAt}}")?, started, "restarted");
    f.api
        .wait_for(&containers, Duration::from_secs(30), |c| {
            c[0]["status"] == "running"
        })
        .await?;

    // Logs: the backlog, then a followed stream that sees a new request.
    reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await?
        .text()
        .await?;
    let logs = f
        .api
        .http
        .get(format!("{}{base}/logs?tail=50", f.api.base))
        .bearer_auth(&f.api.token)
        .send()
        .await?;
    assert_eq!(logs.status().as_u16(), 200);
    let text = logs.text().await?;
    assert!(text.contains("url:/health"), "{text}");
    let mut follow = f
        .api
        .http
        .get(format!("{}{base}/logs?tail=0&follow=true", f.api.base))
        .bearer_auth(&f.api.token)
        .send()
        .await?;
    assert_eq!(follow.status().as_u16(), 200);
    // Once output flows (the health probe's requests), make a request of our own.
    let first = tokio::time::timeout(Duration::from_secs(10), follow.chunk()).await??;
    assert!(
        first.is_some_and(|c| !c.is_empty()),
        "the followed stream delivers output"
    );
    reqwest::get(format!("http://127.0.0.1:{port}/followed"))
        .await?
        .text()
        .await
        .ok();
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("url:/followed") && std::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), follow.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    assert!(
        seen.contains("url:/followed"),
        "the followed stream shows new output: {seen:?}"
    );
    drop(follow);

    // Refusals: unknown action, instance not running the stack.
    let (status, _) = f
        .api
        .call(Method::POST, &format!("{base}/explode"), None)
        .await?;
    assert_eq!(status, 404);
    let (status, _) = f
        .api
        .call(
            Method::POST,
            &format!("/v3/alm/stack/{stack}/instances/i-nowhere/restart"),
            None,
        )
        .await?;
    assert_eq!(status, 404);
    // The agent keeps serving after the followed stream was dropped.
    let (status, _) = f
        .api
        .call(Method::POST, &format!("{base}/restart"), None)
        .await?;
    assert_eq!(status, 202);
    // Wait for this second restart to finish: two restarts reported, and
    // running after them.
    let events = format!("/v3/events?stack_id={stack}&type=container.status");
    let count = |e: &Value, status: &str| {
        e.as_array().map_or(0, |e| {
            e.iter().filter(|e| e["data"]["status"] == status).count()
        })
    };
    f.api
        .wait_for(&events, Duration::from_secs(30), |e| {
            count(e, "restarting") >= 2
                && e.as_array()
                    .and_then(|e| e.last())
                    .is_some_and(|e| e["data"]["status"] == "running")
        })
        .await?;

    // A probe that starts failing while the container runs: probe-failure,
    // then a restart per the policy.
    let id = agent_containers(&f.agent_id)?.remove(0);
    docker(&["exec", &id, "rm", "/www/health"])?;
    let seen = f
        .api
        .wait_for(&events, Duration::from_secs(30), |e| {
            count(e, "probe-failure") >= 1
        })
        .await?;
    let failure = seen
        .as_array()
        .and_then(|e| e.iter().find(|e| e["data"]["status"] == "probe-failure"))
        .cloned()
        .unwrap_or_default();
    assert!(
        failure["data"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("404"),
        "{failure}"
    );
    f.api
        .wait_for(&events, Duration::from_secs(30), |e| {
            count(e, "restarting") >= 3
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwanted_labelled_containers_are_removed_after_the_grace_period() -> anyhow::Result<()> {
    let mut f = fleet("i-docker-6").await?;
    if let Some(agent) = f.agent.take() {
        agent.terminate()?;
    }
    // A container carrying this agent's labels that no desired state wants
    // (left by a crash, or started by hand).
    let stray = docker(&[
        "run",
        "-d",
        "--label",
        &format!("flotilla.agent={}", f.agent_id),
        "--label",
        "flotilla.managed=true",
        "--label",
        "flotilla.stack=mo-gone-tk",
        "--label",
        "flotilla.flag=Old",
        IMAGE,
    ])?;
    let agent = AgentProcess::spawn_with(
        f.agent_dir.path(),
        &["--docker-network", &f.network, "--orphan-grace", "2"],
    )?;
    agent.wait_log("unwanted containers", Duration::from_secs(20))?;
    assert_eq!(
        inspect(&stray, "{{.State.Running}}")?,
        "true",
        "left alone during the grace period"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !agent_containers(&f.agent_id)?.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        agent_containers(&f.agent_id)?.is_empty(),
        "removed after the grace period"
    );
    // A container of another agent is not touched.
    let foreign = docker(&[
        "run",
        "-d",
        "--label",
        "flotilla.agent=ag-someone-else",
        IMAGE,
    ])?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(inspect(&foreign, "{{.State.Running}}")?, "true");
    docker(&["rm", "-f", &foreign])?;
    // A bad image reference fails clearly, now at apply (the controller
    // runs the agent's parser), so no agent ever gets it.
    let (status, body) = f
        .api
        .call(
            Method::POST,
            "/v3/alm/template",
            Some(&template(json!({"image": "Not/A:Valid:Ref"}))),
        )
        .await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"][0]["context"]["path"],
        "/configurations/0/container/image"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not a valid image reference"),
        "{body}"
    );
    agent.terminate()?;
    Ok(())
}

/// The container of `stack` on the fleet's agent.
fn container_of(f: &DockerFleet, stack: &str) -> anyhow::Result<String> {
    for id in agent_containers(&f.agent_id)? {
        if inspect(&id, "{{index .Config.Labels \"flotilla.stack\"}}")? == stack {
            return Ok(id);
        }
    }
    anyhow::bail!("no container for {stack}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_volumes_are_per_stack_and_capabilities_and_network_mode_reach_the_container(
) -> anyhow::Result<()> {
    // Declared before the fleet: dropped after its containers are gone.
    let mut sweep = VolumeSweep(Vec::new());
    let f = fleet("i-docker-volumes").await?;
    // Each container lists the shared-looking volume, then marks it.
    let marking = |stage: &str| {
        json!({
            "image": IMAGE,
            "environment_variables": {"STAGE": stage},
            "command": ["sh", "-c", "ls /data > /tmp/seen; touch /data/$STAGE; exec sleep 3600"],
            "volumes": ["data:/data"],
            "stop_grace_period": "1s"
        })
    };
    // (`privileged` itself cannot start on this nested engine: runc may not
    // apply every capability; the create body's unit test covers it.)
    let mut first_spec = marking("first");
    first_spec["cap_add"] = json!(["CAP_NET_ADMIN", "sys_time"]);
    first_spec["network_mode"] = json!("none");
    // Default deny: the built-in pool refuses both until an admin allows them.
    let (status, _) = f
        .api
        .call(
            reqwest::Method::POST,
            "/v3/alm/template",
            Some(&template(first_spec.clone())),
        )
        .await?;
    assert_eq!(status, 403);
    f.api
        .set_pool_policy(
            "default",
            json!({"allow_cap_add": ["NET_ADMIN", "SYS_TIME"]}),
        )
        .await?;
    let first = f.api.apply(&template(first_spec)).await?;
    sweep.0.push(format!("flotilla-{first}-data"));
    let described = status_of(&f.api, &first, &["CREATE_COMPLETE", "CREATE_FAILED"]).await?;
    assert_eq!(described["stack_status"], "CREATE_COMPLETE", "{described}");
    let second = f.api.apply(&template(marking("second"))).await?;
    sweep.0.push(format!("flotilla-{second}-data"));
    let described = status_of(&f.api, &second, &["CREATE_COMPLETE", "CREATE_FAILED"]).await?;
    assert_eq!(described["stack_status"], "CREATE_COMPLETE", "{described}");

    let one = container_of(&f, &first)?;
    let two = container_of(&f, &second)?;
    let volume_of = |id: &str| inspect(id, "{{range .Mounts}}{{.Name}}{{end}}");
    let (volume_one, volume_two) = (volume_of(&one)?, volume_of(&two)?);
    let checks = (|| -> anyhow::Result<()> {
        assert_eq!(volume_one, format!("flotilla-{first}-data"));
        assert_eq!(volume_two, format!("flotilla-{second}-data"));
        // The second stack never sees what the first wrote.
        for _ in 0..50 {
            if docker(&["exec", &two, "ls", "/data"])?.contains("second") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(docker(&["exec", &two, "ls", "/data"])?, "second");
        assert_eq!(docker(&["exec", &one, "ls", "/data"])?, "first");
        // The host-access fields reached the engine.
        let caps = inspect(&one, "{{.HostConfig.CapAdd}}")?;
        assert!(
            caps.contains("NET_ADMIN") && caps.contains("SYS_TIME"),
            "{caps}"
        );
        assert_eq!(inspect(&one, "{{.HostConfig.NetworkMode}}")?, "none");
        assert_eq!(
            inspect(&one, "{{len .NetworkSettings.Networks}}")?,
            "1",
            "only the none network, not the agent's bridge"
        );
        assert_eq!(inspect(&two, "{{.HostConfig.CapAdd}}")?, "[]");
        assert_ne!(
            inspect(&two, "{{.HostConfig.NetworkMode}}")?,
            "none",
            "the second stays on the agent's network"
        );
        Ok(())
    })();
    for stack in [&first, &second] {
        f.api
            .call(Method::DELETE, &format!("/v3/alm/stack/{stack}"), None)
            .await?;
    }
    for stack in [&first, &second] {
        status_of(&f.api, stack, &["DELETE_COMPLETE"]).await?;
    }
    drop(f);
    drop(sweep);
    checks
}

/// Removes the named Docker volumes when dropped (after the containers).
struct VolumeSweep(Vec<String>);

impl Drop for VolumeSweep {
    fn drop(&mut self) {
        for volume in &self.0 {
            let _ = docker(&["volume", "rm", "-f", volume]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_a_stack_mounted_before_per_stack_names_keeps_its_name() -> anyhow::Result<()> {
    let mut sweep = VolumeSweep(Vec::new());
    let f = fleet("i-docker-legacy-volume").await?;
    let idle = |volumes: Value| {
        json!({
            "image": IMAGE,
            "command": ["sh", "-c", "exec sleep 3600"],
            "volumes": volumes,
            "stop_grace_period": "1s"
        })
    };
    let stack = f.api.apply(&template(idle(json!([])))).await?;
    status_of(&f.api, &stack, &["CREATE_COMPLETE"]).await?;
    // What an agent before per-stack names left: the stack's container
    // mounting the template's volume under its bare name.
    let legacy = format!("legacy-{}", stack.to_ascii_lowercase());
    sweep.0.push(legacy.clone());
    let old = docker(&[
        "run",
        "-d",
        "--label",
        &format!("flotilla.stack={stack}"),
        "-v",
        &format!("{legacy}:/data"),
        IMAGE,
        "sleep",
        "3600",
    ])?;
    let outcome = async {
        let volumes = json!([format!("{legacy}:/data")]);
        f.api
            .update(&stack, &template(idle(volumes.clone())))
            .await?;
        let described = status_of(&f.api, &stack, &["UPDATE_COMPLETE", "UPDATE_FAILED"]).await?;
        anyhow::ensure!(
            described["stack_status"] == "UPDATE_COMPLETE",
            "{described}"
        );
        let mounted = inspect(
            &container_of(&f, &stack)?,
            "{{range .Mounts}}{{.Name}}{{end}}",
        )?;
        anyhow::ensure!(
            mounted == legacy,
            "the upgraded stack keeps {legacy}, not {mounted}"
        );
        // Another stack naming the same volume gets its own.
        let other = f.api.apply(&template(idle(volumes))).await?;
        status_of(&f.api, &other, &["CREATE_COMPLETE"]).await?;
        sweep.0.push(format!("flotilla-{other}-{legacy}"));
        let theirs = inspect(
            &container_of(&f, &other)?,
            "{{range .Mounts}}{{.Name}}{{end}}",
        )?;
        anyhow::ensure!(theirs == format!("flotilla-{other}-{legacy}"), "{theirs}");
        Ok(())
    }
    .await;
    docker(&["rm", "-f", &old])?;
    drop(f);
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_brings_each_container_back_healthy_before_the_next() -> anyhow::Result<()>
{
    let f = fleet("i-docker-roll").await?;
    let body = json!({
        "version": "2017-03-03",
        "label": "rolling",
        "configurations": [
            {"role": "web", "flag": "Web01", "provision": {"instance_count": 1}, "container": web(free_tcp_port()?, "one")},
            {"role": "web", "flag": "Web02", "provision": {"instance_count": 1}, "container": web(free_tcp_port()?, "two")},
        ]
    });
    let stack = f.api.apply(&body).await?;
    status_of(&f.api, &stack, &["CREATE_COMPLETE"]).await?;
    let flag_of = |id: &str| inspect(id, "{{index .Config.Labels \"flotilla.flag\"}}");
    let mut started = std::collections::BTreeMap::new();
    for id in agent_containers(&f.agent_id)? {
        started.insert(
            flag_of(&id)?,
            (id.clone(), inspect(&id, "{{.State.StartedAt}}")?),
        );
    }
    assert_eq!(started.len(), 2, "{started:?}");
    let before = f.api.get(&format!("/v3/events?stack_id={stack}")).await?;
    let after_id = before
        .as_array()
        .and_then(|e| e.last())
        .and_then(|e| e["id"].as_u64())
        .unwrap_or(0);

    let (status, answer) = f
        .api
        .call(
            Method::POST,
            &format!("/v3/alm/stack/{stack}/restart"),
            None,
        )
        .await?;
    assert_eq!(status, 202, "{answer}");
    let task_id = answer["task_id"].as_str().unwrap_or_default().to_owned();
    let task = f
        .api
        .wait_for(
            &format!("/v3/tasks/{task_id}"),
            Duration::from_secs(60),
            |t| t["taskStatus"] != "PENDING",
        )
        .await?;
    assert_eq!(task["taskStatus"], "SUCCESS", "{task}");

    // Both containers were restarted in place (same container, new start),
    // and are running.
    for (flag, (id, at)) in &started {
        assert_ne!(
            &inspect(id, "{{.State.StartedAt}}")?,
            at,
            "{flag} restarted"
        );
        assert_eq!(inspect(id, "{{.State.Running}}")?, "true", "{flag} runs");
    }
    // Web02 went down only once Web01 was back past its health check.
    let events = f
        .api
        .get(&format!(
            "/v3/events?stack_id={stack}&type=container.status&since={after_id}"
        ))
        .await?;
    let seen: Vec<(String, String)> = events
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["data"]["flag"].as_str().unwrap_or_default().to_owned(),
                e["data"]["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let at = |flag: &str, status: &str| {
        seen.iter()
            .position(|(f, s)| f == flag && s == status)
            .unwrap_or_else(|| panic!("no {status} of {flag} in {seen:?}"))
    };
    assert!(
        at("Web01", "restarting") < at("Web01", "running"),
        "{seen:?}"
    );
    assert!(
        at("Web01", "running") < at("Web02", "restarting"),
        "{seen:?}"
    );
    assert!(
        at("Web02", "restarting") < at("Web02", "running"),
        "{seen:?}"
    );
    let (status, _) = f
        .api
        .call(Method::DELETE, &format!("/v3/alm/stack/{stack}"), None)
        .await?;
    assert_eq!(status, 202);
    status_of(&f.api, &stack, &["DELETE_COMPLETE"]).await?;
    Ok(())
}

/// The containers view's status of the stack's one configuration.
async fn container_status(api: &Api, stack: &str, want: &str) -> anyhow::Result<Value> {
    api.wait_for(
        &format!("/v3/alm/stack/{stack}/containers"),
        Duration::from_secs(30),
        |c| c[0]["status"] == want,
    )
    .await
}

/// Restarts the fleet's agent after `kill -9`, prunes every second.
fn kill_and_restart(f: &mut DockerFleet) -> anyhow::Result<AgentProcess> {
    if let Some(agent) = f.agent.take() {
        agent.kill9()?;
    }
    let agent = AgentProcess::spawn_with(
        f.agent_dir.path(),
        &["--docker-network", &f.network, "--cleanup-interval", "1"],
    )?;
    agent.wait_log("connected to the controller", Duration::from_secs(20))?;
    Ok(agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_stack_stays_stopped_through_kill_9_and_prune_until_started() -> anyhow::Result<()>
{
    let mut f = fleet("i-docker-hold").await?;
    let port = free_tcp_port()?;
    let stack = f.api.apply(&template(web(port, "one"))).await?;
    status_of(&f.api, &stack, &["CREATE_COMPLETE"]).await?;
    let id = agent_containers(&f.agent_id)?.remove(0);

    // Stop the stack: the container stops and says so.
    let (status, answer) = f
        .api
        .call(Method::POST, &format!("/v3/alm/stack/{stack}/stop"), None)
        .await?;
    assert_eq!(
        (status, answer["stack_status"].as_str()),
        (202, Some("UPDATE_IN_PROGRESS")),
        "{answer}"
    );
    let task = answer["task_id"].as_str().unwrap_or_default().to_owned();
    status_of(&f.api, &stack, &["UPDATE_COMPLETE"]).await?;
    container_status(&f.api, &stack, "stopped").await?;
    assert_eq!(inspect(&id, "{{.State.Running}}")?, "false");
    let done = f.api.get(&format!("/v3/tasks/{task}")).await?;
    assert_eq!(
        (done["taskStatus"].as_str(), done["operation"].as_str()),
        (Some("SUCCESS"), Some("stop")),
        "{done}"
    );
    assert_eq!(
        f.api.get(&format!("/v3/alm/stack/{stack}")).await?["stopped"],
        true
    );

    // kill -9, restart with a prune every second: still there, still stopped.
    let agent = kill_and_restart(&mut f)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        agent_containers(&f.agent_id)?,
        vec![id.clone()],
        "kept through the prune"
    );
    assert_eq!(
        inspect(&id, "{{.State.Running}}")?,
        "false",
        "not started by the new agent"
    );

    // A new version of a stopped stack is recorded, not started.
    f.api.update(&stack, &template(web(port, "two"))).await?;
    status_of(&f.api, &stack, &["UPDATE_COMPLETE"]).await?;
    let containers = f
        .api
        .get(&format!("/v3/alm/stack/{stack}/containers"))
        .await?;
    let latest = f.api.get(&format!("/v3/alm/stack/{stack}")).await?["version_id"].clone();
    assert_eq!(containers[0]["status"], "stopped", "{containers}");
    assert_eq!(containers[0]["version_id"], latest, "{containers}");
    let running: Vec<String> = agent_containers(&f.agent_id)?
        .into_iter()
        .filter(|c| inspect(c, "{{.State.Running}}").is_ok_and(|r| r == "true"))
        .collect();
    assert!(running.is_empty(), "nothing runs: {running:?}");
    // A restart of a stopped stack is refused, not left to time out.
    let (status, _) = f
        .api
        .call(
            Method::POST,
            &format!("/v3/alm/stack/{stack}/restart"),
            None,
        )
        .await?;
    assert_eq!(status, 409);

    // Start: the latest version runs.
    let (status, answer) = f
        .api
        .call(Method::POST, &format!("/v3/alm/stack/{stack}/start"), None)
        .await?;
    assert_eq!(status, 202, "{answer}");
    status_of(&f.api, &stack, &["UPDATE_COMPLETE"]).await?;
    container_status(&f.api, &stack, "running").await?;
    let ids = agent_containers(&f.agent_id)?;
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(inspect(&ids[0], "{{.Config.Env}}")?.contains("STAGE=two"));
    assert_eq!(inspect(&ids[0], "{{.State.Running}}")?, "true");
    f.agent = Some(agent);

    // One instance stopped by an operator: the hold outlives kill -9 and
    // the prune, and goes with a start.
    let base = format!("/v3/alm/stack/{stack}/instances/i-docker-hold");
    let (status, _) = f
        .api
        .call(Method::POST, &format!("{base}/stop"), None)
        .await?;
    assert_eq!(status, 202);
    container_status(&f.api, &stack, "stopped").await?;
    let id = ids[0].clone();
    let agent = kill_and_restart(&mut f)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        agent_containers(&f.agent_id)?,
        vec![id.clone()],
        "kept through the prune"
    );
    assert_eq!(
        inspect(&id, "{{.State.Running}}")?,
        "false",
        "the hold outlived the agent"
    );
    let (status, _) = f
        .api
        .call(Method::POST, &format!("{base}/start"), None)
        .await?;
    assert_eq!(status, 202);
    container_status(&f.api, &stack, "running").await?;
    assert_eq!(inspect(&id, "{{.State.Running}}")?, "true");
    f.agent = Some(agent);

    // The audit trail has both stack operations.
    let audits = f.api.get(&format!("/v3/audits?stack_id={stack}")).await?;
    let actions: Vec<&str> = audits
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["action"].as_str())
        .collect();
    for action in [
        "stack.stop",
        "stack.start",
        "instance.stop",
        "instance.start",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    Ok(())
}
