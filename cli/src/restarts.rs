//! `restart STACK [--flag F] [--wait]`: a rolling restart, one instance at
//! a time; `stop|start STACK [--wait]`: the whole stack. Each optionally
//! followed until its task ends.

use crate::client::Client;
use crate::commands::{finish, Output};
use crate::table::cell;
use crate::wait;
use reqwest::Method;
use std::time::Duration;

/// Starts the restart; prints the order of instances, or (waiting) follows
/// the task and fails with its reason.
pub async fn restart(
    client: &Client,
    out: Output,
    stack_id: &str,
    flag: Option<&str>,
    wait_for: Option<Duration>,
) -> anyhow::Result<()> {
    let mut path = format!("/v3/alm/stack/{stack_id}/restart");
    if let Some(flag) = flag {
        path.push_str(&format!(
            "?{}",
            serde_urlencoded::to_string([("flag", flag)])?
        ));
    }
    let answer = client.call(Method::POST, &path, None).await?;
    let task_id = cell(&answer["task_id"]);
    if !out.json {
        let order: Vec<String> = answer["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| format!("{} on {}", cell(&i["flag"]), cell(&i["instance_id"])))
            .collect();
        println!(
            "restarting stack {stack_id} one instance at a time (task {task_id}): {}",
            order.join(", ")
        );
    }
    let Some(timeout) = wait_for else {
        if out.json {
            out.value(&answer);
        }
        return Ok(());
    };
    let task = wait::task(client, &task_id, timeout).await?;
    if out.json {
        out.value(&task);
    } else {
        println!("stack {stack_id} restarted: every instance is back");
    }
    Ok(())
}

/// `stop STACK` or `start STACK` (`action`), waiting as `apply` does.
pub async fn hold(
    client: &Client,
    out: Output,
    stack_id: &str,
    action: &str,
    wait_for: Option<Duration>,
) -> anyhow::Result<()> {
    let path = format!("/v3/alm/stack/{stack_id}/{action}");
    let answer = client.call(Method::POST, &path, None).await?;
    let what = if action == "stop" {
        "stopping"
    } else {
        "starting"
    };
    finish(client, out, &answer, stack_id, what, wait_for).await
}
