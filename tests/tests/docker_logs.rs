//! Log streams that end: followers that go away free their stream on the
//! agent at once, so abandoned follows never use up the agent's streams.

use flotilla_tests::{ensure_image, DockerFleet};
use serde_json::json;
use std::time::{Duration, Instant};

const IMAGE: &str = "flotilla-test/web:1";

/// Opens a follow of `base` (new output only) as the fleet's admin.
async fn follow(f: &DockerFleet, base: &str) -> reqwest::Result<reqwest::Response> {
    f.api
        .http
        .get(format!("{base}?tail=0&follow=true"))
        .bearer_auth(&f.api.token)
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_follows_free_their_streams() -> anyhow::Result<()> {
    ensure_image(IMAGE)?;
    let f = DockerFleet::start("i-docker-logs", &["--heartbeat", "1"], &[]).await?;
    // One line of output, then silence: a follow has nothing more to send.
    let stack = f
        .api
        .apply(&json!({
            "version": "2017-03-03",
            "configurations": [{
                "role": "quiet", "flag": "Web01",
                "provision": {"instance_count": 1},
                "container": {
                    "image": IMAGE,
                    "command": ["sh", "-c", "echo ready; exec sleep 3600"],
                    "stop_grace_period": "1s"
                }
            }]
        }))
        .await?;
    f.api
        .wait_for(
            &format!("/v3/alm/stack/{stack}"),
            Duration::from_secs(60),
            |s| s["stack_status"] == "CREATE_COMPLETE",
        )
        .await?;
    let containers = f
        .api
        .get(&format!("/v3/alm/stack/{stack}/containers"))
        .await?;
    let instance = containers[0]["instance_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let base = format!(
        "{}/v3/alm/stack/{stack}/instances/{instance}/logs",
        f.api.base
    );

    // 24 follows, each abandoned once it answered (more than the agent's
    // stream limit): every one still answers.
    for n in 0..24 {
        let client = reqwest::Client::new();
        let follow = tokio::time::timeout(
            Duration::from_secs(5),
            client
                .get(format!("{base}?tail=0&follow=true"))
                .bearer_auth(&f.api.token)
                .send(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("follow {n} did not answer: streams used up"))??;
        assert_eq!(follow.status().as_u16(), 200, "follow {n}");
        drop(follow);
        drop(client);
    }
    // And then a tail answers at once.
    let started = Instant::now();
    let tail = tokio::time::timeout(
        Duration::from_secs(2),
        f.api
            .http
            .get(format!("{base}?tail=5"))
            .bearer_auth(&f.api.token)
            .send(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the tail did not answer within 2 s"))??;
    let text = tokio::time::timeout(Duration::from_secs(2), tail.text()).await??;
    assert!(text.contains("ready"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // A client holds at most 4 follows of one instance: a fifth is 429 in
    // the error shape, and a place comes back when one is closed.
    let mut held = Vec::new();
    for _ in 0..4 {
        let follow = follow(&f, &base).await?;
        assert_eq!(follow.status().as_u16(), 200);
        held.push(follow);
    }
    let fifth = follow(&f, &base).await?;
    assert_eq!(fifth.status().as_u16(), 429);
    let body: serde_json::Value = fifth.json().await?;
    assert_eq!(body["errors"][0]["code"], "too_many_follows", "{body}");
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        let follow = follow(&f, &base).await?;
        if follow.status().as_u16() == 200 {
            again = Some(follow);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "the closed follow's place came back");
    drop(again);

    // An agent that is connected but does not answer (here: stopped) gets
    // a 504 in the error shape within the opening deadline, not a 200
    // whose body never moves.
    let pid = f.agent.as_ref().map(|a| a.pid()).unwrap_or_default();
    signal(pid, "STOP")?;
    let started = Instant::now();
    let stalled = tokio::time::timeout(
        Duration::from_secs(15),
        f.api
            .http
            .get(format!("{base}?tail=5"))
            .bearer_auth(&f.api.token)
            .send(),
    )
    .await;
    let waited = started.elapsed();
    signal(pid, "CONT")?;
    let stalled =
        stalled.map_err(|_| anyhow::anyhow!("no answer while the agent was stopped"))??;
    assert_eq!(stalled.status().as_u16(), 504);
    let body: serde_json::Value = stalled.json().await?;
    assert_eq!(body["errors"][0]["code"], "agent_timeout", "{body}");
    assert!(waited >= Duration::from_secs(4), "{waited:?}");
    Ok(())
}

/// Sends `SIGname` to a process.
fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}
