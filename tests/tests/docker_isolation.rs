//! Stacks on one VM are isolated from each other: each stack's containers
//! are on its own Docker network (real agent, real engine), the network
//! goes when the stack does, and containers adopted after an upgrade from
//! the old shared network stay where they are until their next update.

use flotilla_tests::{
    agent_containers, agent_networks, docker, ensure_image, AgentProcess, Api, DockerFleet,
};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const IMAGE: &str = "flotilla-test/web:1";

fn container(stage: &str) -> Value {
    json!({
        "image": IMAGE,
        "environment_variables": {"STAGE": stage},
        "stop_grace_period": "2s",
        "health_check": {"http": {"path": "/health", "port": 80}, "interval": "300ms", "timeout": "1s", "retries": 3}
    })
}

fn template(flags: &[&str], stage: &str) -> Value {
    let configurations: Vec<Value> = flags
        .iter()
        .map(|flag| json!({"role": "web", "flag": flag, "provision": {"instance_count": 1}, "container": container(stage)}))
        .collect();
    json!({"version": "2017-03-03", "configurations": configurations})
}

async fn status_of(api: &Api, stack: &str, want: &[&str]) -> anyhow::Result<Value> {
    api.wait_for(
        &format!("/v3/alm/stack/{stack}"),
        Duration::from_secs(90),
        |s| want.iter().any(|w| s["stack_status"] == *w),
    )
    .await
}

/// The one container of a stack's configuration.
fn container_of(stack: &str, flag: &str) -> anyhow::Result<String> {
    let ids = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=flotilla.stack={stack}"),
        "--filter",
        &format!("label=flotilla.flag={flag}"),
    ])?;
    let ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
    anyhow::ensure!(ids.len() == 1, "one container of {stack}/{flag}: {ids:?}");
    Ok(ids[0].to_owned())
}

/// `(network name, address)` of every network a container is on.
fn networks_of(id: &str) -> anyhow::Result<Vec<(String, String)>> {
    let out = docker(&[
        "inspect",
        "-f",
        "{{range $name, $n := .NetworkSettings.Networks}}{{$name}} {{$n.IPAddress}}\n{{end}}",
        id,
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (name, ip) = l.trim().split_once(' ')?;
            Some((name.to_owned(), ip.to_owned()))
        })
        .collect())
}

/// The names of the networks a container is on.
fn network_names(id: &str) -> anyhow::Result<Vec<String>> {
    Ok(networks_of(id)?.into_iter().map(|n| n.0).collect())
}

fn address_of(id: &str) -> anyhow::Result<String> {
    let networks = networks_of(id)?;
    anyhow::ensure!(networks.len() == 1, "on one network: {networks:?}");
    Ok(networks[0].1.clone())
}

/// Whether container `from` gets an HTTP answer from `ip:80`.
fn reaches(from: &str, ip: &str) -> anyhow::Result<bool> {
    let output = std::process::Command::new("docker")
        .args([
            "exec",
            from,
            "sh",
            "-c",
            &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} 80"),
        ])
        .output()?;
    Ok(String::from_utf8_lossy(&output.stdout).contains("200 OK"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_of_different_stacks_cannot_connect() -> anyhow::Result<()> {
    ensure_image(IMAGE)?;
    let f = DockerFleet::start_with(
        "i-isolation-1",
        &["--heartbeat", "1"],
        &[],
        &["--cleanup-interval", "1"],
    )
    .await?;
    let a = f.api.apply(&template(&["Web01", "Web02"], "a")).await?;
    let b = f.api.apply(&template(&["Web01"], "b")).await?;
    for stack in [&a, &b] {
        let described = status_of(&f.api, stack, &["CREATE_COMPLETE", "CREATE_FAILED"]).await?;
        assert_eq!(described["stack_status"], "CREATE_COMPLETE", "{described}");
    }
    let (a1, a2, b1) = (
        container_of(&a, "Web01")?,
        container_of(&a, "Web02")?,
        container_of(&b, "Web01")?,
    );
    for (id, stack) in [(&a1, &a), (&a2, &a), (&b1, &b)] {
        assert_eq!(
            network_names(id)?,
            [format!("flotilla-{}-{stack}", f.agent_id)],
            "each container is on its stack's network only"
        );
    }
    let (ip_a2, ip_b1, ip_a1) = (address_of(&a2)?, address_of(&b1)?, address_of(&a1)?);
    assert!(reaches(&a1, &ip_a2)?, "containers of one stack connect");
    assert!(!reaches(&a1, &ip_b1)?, "stack a cannot reach stack b");
    assert!(!reaches(&b1, &ip_a1)?, "stack b cannot reach stack a");
    assert_eq!(agent_networks(&f.agent_id)?.len(), 2);

    // Stack b goes: so does its network, on the next clean-up; a's stays.
    let (status, _) = f
        .api
        .call(Method::DELETE, &format!("/v3/alm/stack/{b}"), None)
        .await?;
    assert_eq!(status, 202);
    status_of(&f.api, &b, &["DELETE_COMPLETE"]).await?;
    let gone = format!("flotilla-{}-{b}", f.agent_id);
    let deadline = Instant::now() + Duration::from_secs(20);
    while docker(&["network", "inspect", &gone]).is_ok() {
        anyhow::ensure!(Instant::now() < deadline, "network {gone} was not removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kept = format!("flotilla-{}-{a}", f.agent_id);
    assert!(docker(&["network", "inspect", &kept]).is_ok(), "{kept}");
    assert!(reaches(&a1, &ip_a2)?, "stack a still works");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_on_the_shared_network_stay_until_their_next_update() -> anyhow::Result<()> {
    ensure_image(IMAGE)?;
    let mut f = DockerFleet::start("i-isolation-2", &["--heartbeat", "1"], &[]).await?;
    let stack = f.api.apply(&template(&["Web01"], "old")).await?;
    status_of(&f.api, &stack, &["CREATE_COMPLETE"]).await?;
    let id = container_of(&stack, "Web01")?;

    // As an agent from before per-stack networks left it: on the shared one.
    if let Some(agent) = f.agent.take() {
        agent.kill9()?;
    }
    let own = format!("flotilla-{}-{stack}", f.agent_id);
    docker(&["network", "create", &f.network])?;
    docker(&["network", "disconnect", &own, &id])?;
    docker(&["network", "connect", &f.network, &id])?;
    let started = docker(&["inspect", "-f", "{{.State.StartedAt}}", &id])?;
    let outcome = async {
        let agent =
            AgentProcess::spawn_with(f.agent_dir.path(), &["--docker-network", &f.network])?;
        agent.wait_log("adopted", Duration::from_secs(20))?;
        // Probed on the shared network for a while: still healthy, not moved.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(agent_containers(&f.agent_id)?, vec![id.clone()]);
        assert_eq!(
            docker(&["inspect", "-f", "{{.State.StartedAt}}", &id])?,
            started,
            "not restarted"
        );
        assert_eq!(network_names(&id)?, [f.network.as_str()]);

        // The next update: the new container is on the stack's network.
        f.api.update(&stack, &template(&["Web01"], "new")).await?;
        let described = status_of(&f.api, &stack, &["UPDATE_COMPLETE", "UPDATE_FAILED"]).await?;
        assert_eq!(described["stack_status"], "UPDATE_COMPLETE", "{described}");
        let new = container_of(&stack, "Web01")?;
        assert_ne!(new, id);
        assert_eq!(network_names(&new)?, [own.as_str()]);
        let (status, _) = f
            .api
            .call(Method::DELETE, &format!("/v3/alm/stack/{stack}"), None)
            .await?;
        assert_eq!(status, 202);
        status_of(&f.api, &stack, &["DELETE_COMPLETE"]).await?;
        anyhow::Ok(())
    }
    .await;
    for container in agent_containers(&f.agent_id).unwrap_or_default() {
        let _ = docker(&["rm", "-f", &container]);
    }
    let _ = docker(&["network", "rm", &f.network]);
    outcome
}
