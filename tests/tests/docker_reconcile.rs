//! The agent's reconciler on the real engine: a failed start is tried
//! again with backoff (no new version needed), a container removed behind
//! the agent's back is made again, and a slot busy waiting for a health
//! check holds up no other slot.

use flotilla_tests::{agent_containers, docker, ensure_image, Api, DockerFleet};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const IMAGE: &str = "flotilla-test/web:1";

fn template(flag: &str, container: Value) -> Value {
    json!({
        "version": "2017-03-03",
        "label": "reconcile test",
        "configurations": [{"role": "web", "flag": flag, "provision": {"instance_count": 1}, "container": container}]
    })
}

async fn container_status(api: &Api, stack: &str, want: &str) -> anyhow::Result<Value> {
    api.wait_for(
        &format!("/v3/alm/stack/{stack}/containers"),
        Duration::from_secs(60),
        |c| c[0]["status"] == want,
    )
    .await
}

/// Ids of the agent's containers of one stack.
fn stack_containers(agent_id: &str, stack: &str) -> anyhow::Result<Vec<String>> {
    Ok(agent_containers(agent_id)?
        .into_iter()
        .filter(|id| {
            docker(&[
                "inspect",
                "-f",
                "{{index .Config.Labels \"flotilla.stack\"}}",
                id,
            ])
            .is_ok_and(|s| s == stack)
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_is_tried_again_with_backoff_until_it_runs() -> anyhow::Result<()> {
    ensure_image(IMAGE)?;
    // A registry nobody serves: every pull fails at once.
    let later = "localhost:1/flotilla-test/later:1";
    let _ = docker(&["rmi", later]);
    let f = DockerFleet::start("i-reconcile-1", &["--heartbeat", "1"], &[]).await?;
    let stack = f
        .api
        .apply(&template("Web01", json!({"image": later})))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let failure = loop {
        let seen = f.api.container_reports(&stack).await?;
        if let Some(failure) = seen.iter().find(|(s, _)| s == "start-failure") {
            break failure.clone();
        }
        anyhow::ensure!(Instant::now() < deadline, "no start failure: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(failure.1.contains("; retry in "), "{failure:?}");
    // The image turns up (as a pushed one would): the next try runs it,
    // with no new version.
    docker(&["tag", IMAGE, later])?;
    container_status(&f.api, &stack, "running").await?;
    let seen = f.api.container_reports(&stack).await?;
    let failures = seen.iter().filter(|(s, _)| s == "start-failure").count();
    assert!(failures >= 1, "{seen:?}");
    assert_eq!(stack_containers(&f.agent_id, &stack)?.len(), 1);
    let _ = docker(&["rmi", "-f", later]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_container_is_made_again_while_another_slot_waits_on_its_health_check(
) -> anyhow::Result<()> {
    ensure_image(IMAGE)?;
    let f = DockerFleet::start("i-reconcile-2", &["--heartbeat", "1"], &[]).await?;
    let web = f
        .api
        .apply(&template(
            "Web01",
            json!({"image": IMAGE, "stop_grace_period": "1s"}),
        ))
        .await?;
    container_status(&f.api, &web, "running").await?;
    let first = stack_containers(&f.agent_id, &web)?;
    assert_eq!(first.len(), 1, "{first:?}");

    // A slot that sits in its first health check for many seconds; every
    // probe is an exec, and the engine reports each one.
    let slow = f
        .api
        .apply(&template(
            "Slow01",
            json!({
                "image": IMAGE,
                "stop_grace_period": "1s",
                "health_check": {"command": ["false"], "interval": "100ms", "timeout": "1s", "retries": 100}
            }),
        ))
        .await?;
    container_status(&f.api, &slow, "starting").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Removed behind the agent's back: made again, while the other slot
    // still waits.
    docker(&["rm", "-f", &first[0]])?;
    let removed = Instant::now();
    let deadline = removed + Duration::from_secs(10);
    let again = loop {
        let now = stack_containers(&f.agent_id, &web)?;
        let running = now.iter().find(|id| {
            **id != first[0]
                && docker(&["inspect", "-f", "{{.State.Running}}", id]).is_ok_and(|r| r == "true")
        });
        if let Some(id) = running {
            break id.clone();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not made again within 10 s: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = removed.elapsed();
    let slow_now = f
        .api
        .get(&format!("/v3/alm/stack/{slow}/containers"))
        .await?;
    assert_eq!(
        slow_now[0]["status"], "starting",
        "the other slot was still in its health check: {slow_now}"
    );
    container_status(&f.api, &web, "running").await?;
    let seen = f.api.container_reports(&web).await?;
    assert!(
        seen.iter()
            .any(|(s, r)| s == "terminated" && r == "removed outside the agent"),
        "{seen:?}"
    );
    println!("made again in {} ms (container {again})", took.as_millis());
    Ok(())
}
