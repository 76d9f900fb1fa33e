//! The pre-stop hook on the real engine: it runs before SIGTERM on an
//! operator's stop, an update and a delete, is bounded by its timeout, and
//! its outcome reaches the status reason.

use flotilla_tests::{agent_containers, docker, ensure_image, Api, DockerFleet};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const IMAGE: &str = "flotilla-test/web:1";

/// A web server whose main process says when it gets SIGTERM.
fn container(pre_stop: Value) -> Value {
    json!({
        "image": IMAGE,
        "command": ["sh", "-c", "trap 'echo got-term; exit 0' TERM; httpd -f -vv -p 80 -h /www & wait"],
        "stop_grace_period": "2s",
        "pre_stop": pre_stop,
    })
}

fn template(flag: &str, container: Value) -> Value {
    json!({
        "version": "2017-03-03",
        "label": "pre-stop test",
        "configurations": [{"role": "web", "flag": flag, "provision": {"instance_count": 1}, "container": container}]
    })
}

async fn stack_status(api: &Api, stack: &str, want: &str) -> anyhow::Result<Value> {
    api.wait_for(
        &format!("/v3/alm/stack/{stack}"),
        Duration::from_secs(60),
        |s| s["stack_status"] == want,
    )
    .await
}

/// The reason of the newest `status` report of the stack, once there is one.
async fn reason_of(api: &Api, stack: &str, status: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = api.container_reports(stack).await?;
        if let Some((_, reason)) = seen.iter().rev().find(|(s, _)| s == status) {
            return Ok(reason.clone());
        }
        anyhow::ensure!(Instant::now() < deadline, "no {status} report: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes the stack and waits until it is gone.
async fn delete(api: &Api, stack: &str) -> anyhow::Result<()> {
    let (status, body) = api
        .call(Method::DELETE, &format!("/v3/alm/stack/{stack}"), None)
        .await?;
    assert_eq!(status, 202, "{body}");
    stack_status(api, stack, "DELETE_COMPLETE").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pre_stop_hook_runs_before_sigterm_on_every_stop_and_says_how_it_ended(
) -> anyhow::Result<()> {
    ensure_image(IMAGE)?;
    let f = DockerFleet::start("i-pre-stop", &["--heartbeat", "1"], &[]).await?;
    let exec_hook =
        json!({"exec": ["sh", "-c", "echo pre-stop-ran > /proc/1/fd/1; exit 3"], "timeout": "10s"});
    let stack = f
        .api
        .apply(&template("Web01", container(exec_hook)))
        .await?;
    stack_status(&f.api, &stack, "CREATE_COMPLETE").await?;
    let id = agent_containers(&f.agent_id)?.remove(0);

    // An operator's stop: the hook, then SIGTERM; the container is kept.
    let base = format!("/v3/alm/stack/{stack}/instances/i-pre-stop");
    let (status, body) = f
        .api
        .call(Method::POST, &format!("{base}/stop"), None)
        .await?;
    assert_eq!(status, 202, "{body}");
    let reason = reason_of(&f.api, &stack, "stopped").await?;
    assert_eq!(reason, "stopped by an operator; pre-stop exited 3");
    let logs = docker(&["logs", &id])?;
    let ran = logs.find("pre-stop-ran");
    let term = logs.find("got-term");
    assert!(
        ran.is_some() && term.is_some() && ran < term,
        "the hook ran, then SIGTERM came: {logs}"
    );
    let (status, _) = f
        .api
        .call(Method::POST, &format!("{base}/start"), None)
        .await?;
    assert_eq!(status, 202);
    f.api
        .wait_for(
            &format!("/v3/alm/stack/{stack}/containers"),
            Duration::from_secs(30),
            |c| c[0]["status"] == "running",
        )
        .await?;

    // An update: the old container's hook runs once the new one serves.
    let http_hook = json!({"http": {"path": "/drain", "port": 80}, "timeout": "5s"});
    f.api
        .update(&stack, &template("Web01", container(http_hook)))
        .await?;
    stack_status(&f.api, &stack, "UPDATE_COMPLETE").await?;
    let reason = reason_of(&f.api, &stack, "running").await?;
    assert_eq!(reason, "the version before: pre-stop exited 3");

    // A delete: the GET reached the container's server (which has no
    // /drain) before it was stopped.
    delete(&f.api, &stack).await?;
    assert_eq!(
        reason_of(&f.api, &stack, "terminated").await?,
        "pre-stop answered 404"
    );

    // A hook that hangs is cut off at its timeout; the stop goes on.
    let hang = json!({"exec": ["sleep", "60"], "timeout": "1s"});
    let stack = f.api.apply(&template("Slow01", container(hang))).await?;
    stack_status(&f.api, &stack, "CREATE_COMPLETE").await?;
    let asked = Instant::now();
    delete(&f.api, &stack).await?;
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "the delete waited {:?}",
        asked.elapsed()
    );
    assert_eq!(
        reason_of(&f.api, &stack, "terminated").await?,
        "pre-stop timed out after 1s"
    );
    assert!(agent_containers(&f.agent_id)?.is_empty());
    Ok(())
}
