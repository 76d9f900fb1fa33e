//! One function per subcommand. Each prints a table (or `--json`) and
//! returns an error for the process's exit status.

use crate::client::Client;
use crate::table::{cell, render};
use crate::wait;
use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// Output choice shared by every command.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints a JSON value, pretty.
    pub(crate) fn value(&self, value: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        );
    }
}

/// Prints a list: `--json` as is, else a table of `row(item)` under
/// `headers`.
pub(crate) fn show_list(
    out: Output,
    list: &Value,
    headers: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) {
    if out.json {
        out.value(list);
        return;
    }
    let rows: Vec<Vec<String>> = list.as_array().into_iter().flatten().map(row).collect();
    print!("{}", render(headers, &rows));
}

/// Reads a template from a file (`-` for standard input), as JSON.
pub fn read_template(path: &Path) -> anyhow::Result<Value> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// `apply -f FILE [--wait]`.
pub async fn apply(
    client: &Client,
    out: Output,
    template: &Value,
    wait_for: Option<Duration>,
) -> anyhow::Result<()> {
    let created = client
        .call(Method::POST, "/v3/alm/template", Some(template))
        .await?;
    let stack_id = cell(&created["template_id"]);
    finish(client, out, &created, &stack_id, "created", wait_for).await
}

/// `update STACK -f FILE [--wait]`.
pub async fn update(
    client: &Client,
    out: Output,
    stack_id: &str,
    template: &Value,
    wait_for: Option<Duration>,
) -> anyhow::Result<()> {
    let updated = client
        .call(
            Method::PUT,
            &format!("/v3/alm/template/{stack_id}"),
            Some(template),
        )
        .await?;
    finish(client, out, &updated, stack_id, "updated", wait_for).await
}

/// Prints what a call that stored a version answered, or (waiting) follows
/// the stack until it settles and then its task until it ends.
pub(crate) async fn finish(
    client: &Client,
    out: Output,
    answer: &Value,
    stack_id: &str,
    what: &str,
    wait_for: Option<Duration>,
) -> anyhow::Result<()> {
    let Some(timeout) = wait_for else {
        if out.json {
            out.value(answer);
        } else {
            println!(
                "stack {stack_id} {what} (version {})",
                cell(&answer["version_id"])
            );
        }
        return Ok(());
    };
    if !out.json {
        println!("stack {stack_id} {what}; waiting for it to settle");
    }
    let started = std::time::Instant::now();
    let stack = wait::until_settled(client, stack_id, timeout).await?;
    if let Some(task_id) = answer["task_id"].as_str() {
        // The task settles in the same pass as the stack: a few seconds
        // cover the moment between the two writes even at the deadline.
        let left = timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(5));
        wait::task(client, task_id, left).await?;
    }
    if out.json {
        out.value(&stack);
    } else {
        println!("stack {stack_id}: {}", cell(&stack["stack_status"]));
    }
    Ok(())
}

/// `stacks`.
pub async fn stacks(client: &Client, out: Output, all: bool) -> anyhow::Result<()> {
    let path = if all {
        "/v3/alm/stack?include_deleted=true"
    } else {
        "/v3/alm/stack"
    };
    let list = client.get_all(path).await?;
    show_list(
        out,
        &list,
        &["STACK", "NICKNAME", "STATUS", "CREATED"],
        |s| {
            vec![
                cell(&s["stack_id"]),
                cell(&s["nickname"]),
                cell(&s["stack_status"]),
                cell(&s["create_time"]),
            ]
        },
    );
    Ok(())
}

/// `describe STACK`: the stack, then its instances.
pub async fn describe(client: &Client, out: Output, stack_id: &str) -> anyhow::Result<()> {
    let stack = client.get(&format!("/v3/alm/stack/{stack_id}")).await?;
    let containers = client
        .get(&format!("/v3/alm/stack/{stack_id}/containers"))
        .await?;
    if out.json {
        out.value(&json!({ "stack": stack, "containers": containers }));
        return Ok(());
    }
    println!("stack:    {}", cell(&stack["stack_id"]));
    println!("nickname: {}", cell(&stack["nickname"]));
    println!("status:   {}", cell(&stack["stack_status"]));
    if let Some(reason) = stack["stack_status_reason"].as_str() {
        println!("reason:   {reason}");
    }
    println!("version:  {}", cell(&stack["version_id"]));
    println!("created:  {}", cell(&stack["create_time"]));
    let pools: Vec<String> = stack["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| format!("{} in {}", cell(&p["flag"]), cell(&p["pool"])))
        .collect();
    if !pools.is_empty() {
        println!("pools:    {}", pools.join(", "));
    }
    let rows: Vec<Vec<String>> = containers
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                cell(&c["flag"]),
                cell(&c["instance_id"]),
                cell(&c["status"]),
                cell(&c["version_id"]),
                cell(&c["commit"]),
                cell(&c["updated"]),
            ]
        })
        .collect();
    println!();
    print!(
        "{}",
        render(
            &["FLAG", "INSTANCE", "STATUS", "VERSION", "COMMIT", "UPDATED"],
            &rows
        )
    );
    Ok(())
}

/// `versions STACK`.
pub async fn versions(client: &Client, out: Output, stack_id: &str) -> anyhow::Result<()> {
    let list = client
        .get_all(&format!("/v3/alm/template?template_id={stack_id}"))
        .await?;
    show_list(
        out,
        &list,
        &["VERSION", "LATEST", "MODIFIED", "BYTES"],
        |v| {
            vec![
                cell(&v["version_id"]),
                if v["latest"] == true {
                    "yes".into()
                } else {
                    String::new()
                },
                cell(&v["last_modified"]),
                cell(&v["size"]),
            ]
        },
    );
    Ok(())
}

/// `diff STACK [--from V --to V | -f FILE]`: what changed between two
/// versions (default: the two newest), or between the latest and a file.
pub async fn diff(
    client: &Client,
    out: Output,
    stack_id: &str,
    from: Option<&str>,
    to: Option<&str>,
    file: Option<&Value>,
) -> anyhow::Result<()> {
    let request = match file {
        Some(template) => {
            let latest = client
                .get(&format!("/v3/alm/template/{stack_id}?version_id=latest"))
                .await?;
            json!({ "body": [latest, template] })
        }
        None => {
            let (from, to) = match (from, to) {
                (Some(from), Some(to)) => (from.to_owned(), to.to_owned()),
                (None, None) => {
                    let list = client
                        .get(&format!("/v3/alm/template?template_id={stack_id}"))
                        .await?;
                    let ids: Vec<String> = list
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v["version_id"].as_str().map(str::to_owned))
                        .collect();
                    if ids.len() < 2 {
                        bail!("stack {stack_id} has one version; give -f FILE to compare with it");
                    }
                    // Newest first: compare the previous with the latest.
                    (ids[1].clone(), ids[0].clone())
                }
                _ => bail!("give both --from and --to, or neither"),
            };
            json!({ "id": [
                { stack_id: { "version": from } },
                { stack_id: { "version": to } },
            ]})
        }
    };
    let answer = client
        .call(Method::POST, "/v3/alm/template/compare", Some(&request))
        .await?;
    if out.json {
        out.value(&answer["diff"]);
        return Ok(());
    }
    let diff = &answer["diff"];
    let mut any = false;
    for (section, sign) in [("new", "+"), ("removed", "-"), ("edited", "~")] {
        if let Some(entries) = diff[section].as_object() {
            for (path, value) in entries {
                any = true;
                println!("{sign} {path}: {value}");
            }
        }
    }
    if !any {
        println!("no changes");
    }
    Ok(())
}

/// `delete STACK [--wait]`.
pub async fn delete(
    client: &Client,
    out: Output,
    stack_id: &str,
    wait_for: Option<Duration>,
) -> anyhow::Result<()> {
    let answer = client
        .call(Method::DELETE, &format!("/v3/alm/stack/{stack_id}"), None)
        .await?;
    finish(client, out, &answer, stack_id, "deleting", wait_for).await
}

/// `agents`.
pub async fn agents(client: &Client, out: Output, all: bool) -> anyhow::Result<()> {
    let path = if all {
        "/v3/alm/agents?include_revoked=true"
    } else {
        "/v3/alm/agents"
    };
    let list = client.get_all(path).await?;
    let joined = |value: &Value, item: &dyn Fn(&Value) -> String| -> String {
        value
            .as_array()
            .map(|items| items.iter().map(item).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    };
    show_list(
        out,
        &list,
        &[
            "AGENT",
            "INSTANCE",
            "STATE",
            "LABELS",
            "PLACEMENTS",
            "LAST SEEN",
        ],
        |a| {
            let labels = a["labels"]
                .as_object()
                .map(|l| {
                    l.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let placements = joined(&a["placements"], &|p| {
                format!("{}/{}", cell(&p["stack_id"]), cell(&p["flag"]))
            });
            vec![
                cell(&a["agent_id"]),
                cell(&a["instance_id"]),
                cell(&a["state"]),
                cell(&json!(labels)),
                cell(&json!(placements)),
                cell(&a["last_seen"]),
            ]
        },
    );
    Ok(())
}

/// `revoke AGENT`.
pub async fn revoke(client: &Client, out: Output, agent_id: &str) -> anyhow::Result<()> {
    let answer = client
        .call(Method::DELETE, &format!("/v3/alm/agents/{agent_id}"), None)
        .await?;
    if out.json {
        out.value(&answer);
    } else {
        println!("agent {agent_id}: {}", cell(&answer["state"]));
    }
    Ok(())
}

/// `drain AGENT [--undo] [--deadline SECS]`.
pub async fn drain(
    client: &Client,
    out: Output,
    agent_id: &str,
    undo: bool,
    deadline_secs: Option<u64>,
) -> anyhow::Result<()> {
    let path = format!("/v3/alm/agents/{agent_id}/drain");
    let answer = if undo {
        client.call(Method::DELETE, &path, None).await?
    } else {
        let body = deadline_secs.map(|secs| json!({ "deadline_secs": secs }));
        client.call(Method::POST, &path, body.as_ref()).await?
    };
    if out.json {
        out.value(&answer);
    } else {
        println!("agent {agent_id}: {}", cell(&answer["state"]));
    }
    Ok(())
}

/// `restart STACK INSTANCE [--flag F]` (and `stop`, `start`).
pub async fn act(
    client: &Client,
    out: Output,
    action: &str,
    stack_id: &str,
    instance_id: &str,
    flag: Option<&str>,
) -> anyhow::Result<()> {
    let mut path = format!("/v3/alm/stack/{stack_id}/instances/{instance_id}/{action}");
    if let Some(flag) = flag {
        path.push_str(&format!("?flag={flag}"));
    }
    let answer = client.call(Method::POST, &path, None).await?;
    if out.json {
        out.value(&answer);
    } else {
        println!("{action} sent to {instance_id} for stack {stack_id}");
    }
    Ok(())
}

/// One event as a line.
fn event_line(event: &Value) -> String {
    let mut line = format!(
        "{}  {:<18} {}",
        cell(&event["time"]),
        cell(&event["type"]),
        cell(&event["stack_id"])
    );
    if let Some(instance) = event["instance_id"].as_str() {
        line.push_str(&format!(" {instance}"));
    }
    line.push_str(&format!("  {}", event["data"]));
    line
}

/// `events [-f] [--stack S] [--instance I] [--type T] [--since ID]`.
pub async fn events(
    client: &Client,
    out: Output,
    query: &str,
    follow: bool,
    since: Option<u64>,
) -> anyhow::Result<()> {
    if follow {
        crate::stream::follow_events(client, query, since, |event| {
            if out.json {
                println!("{event}");
            } else {
                println!("{}", event_line(event));
            }
            true
        })
        .await?;
        return Ok(());
    }
    let mut path = format!("/v3/events{query}");
    if let Some(since) = since {
        path.push(if query.is_empty() { '?' } else { '&' });
        path.push_str(&format!("since={since}"));
    }
    let list = client.get_all(&path).await?;
    if out.json {
        out.value(&list);
        return Ok(());
    }
    for event in list.as_array().into_iter().flatten() {
        println!("{}", event_line(event));
    }
    Ok(())
}
