//! The `flotilla` operator CLI against a real controller and agent: login,
//! apply/update/delete with `--wait` (to completion and to failure),
//! tables and `--json`, config vars, scale, rollback, diff, versions,
//! agents, drain, events (also followed), logs, restart, and clear errors.

use flotilla_tests::spot::enrolled_agent;
use flotilla_tests::{
    admin_credentials, binary, web_template, AgentProcess, Api, ControllerProcess,
};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `flotilla` with its session in `config`; (success, stdout, stderr).
fn flotilla(config: &Path, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let output = Command::new(binary("flotilla")?)
        .args(args)
        .env("FLOTILLA_CONFIG_DIR", config)
        .env_remove("FLOTILLA_URL")
        .env_remove("FLOTILLA_TOKEN")
        .stdin(Stdio::null())
        .output()?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

fn ok(config: &Path, args: &[&str]) -> anyhow::Result<String> {
    let (success, out, err) = flotilla(config, args)?;
    anyhow::ensure!(success, "flotilla {args:?} failed:\n{out}\n{err}");
    Ok(out)
}

fn json(config: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let mut all = args.to_vec();
    all.push("--json");
    Ok(serde_json::from_str(&ok(config, &all)?)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_the_fleet_from_the_command_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(
        dir.path(),
        &["--heartbeat", "1", "--placement-timeout", "3"],
        &[],
    )?;
    let api = Api::admin(&controller.url(""), dir.path()).await?;
    let (agent_dir, agent_id) = enrolled_agent(&api, controller.quic_addr, "i-cli").await?;
    let agent = AgentProcess::spawn(agent_dir.path(), &[])?;
    agent.wait_log("connected to the controller", Duration::from_secs(20))?;
    let config = tempfile::tempdir()?;
    let cfg = config.path();

    // Before login: a clear message, non-zero.
    let (success, _, err) = flotilla(cfg, &["stacks"])?;
    assert!(!success);
    assert!(err.contains("flotilla login"), "{err}");
    let (id, secret) = admin_credentials(dir.path())?;
    let (success, _, err) = flotilla(
        cfg,
        &[
            "--url",
            &controller.url(""),
            "login",
            "--client-id",
            &id,
            "--client-secret",
            "wrong-secret",
        ],
    )?;
    assert!(!success);
    assert!(err.contains("401"), "{err}");
    ok(
        cfg,
        &[
            "--url",
            &controller.url(""),
            "login",
            "--client-id",
            &id,
            "--client-secret",
            &secret,
        ],
    )?;
    let mode = std::fs::metadata(cfg.join("session.json"))?
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the token is private");

    // apply --wait to completion: plain progress lines, then the status.
    let templates = tempfile::tempdir()?;
    let first = templates.path().join("first.json");
    std::fs::write(&first, web_template(1, "one").to_string())?;
    let out = ok(
        cfg,
        &["apply", "-f", first.to_str().unwrap_or_default(), "--wait"],
    )?;
    assert!(out.contains("1/1 running"), "{out}");
    assert!(out.contains("CREATE_COMPLETE"), "{out}");
    let stacks = json(cfg, &["stacks"])?;
    let stack = stacks[0]["stack_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(stack.starts_with("mo-"), "{stacks}");
    let table = ok(cfg, &["stacks"])?;
    assert!(table.starts_with("STACK"), "{table}");
    assert!(
        table.contains(&stack) && table.contains("CREATE_COMPLETE"),
        "{table}"
    );

    let second = templates.path().join("second.json");
    std::fs::write(&second, web_template(1, "two").to_string())?;
    let out = ok(
        cfg,
        &[
            "update",
            &stack,
            "-f",
            second.to_str().unwrap_or_default(),
            "--wait",
        ],
    )?;
    assert!(out.contains("UPDATE_COMPLETE"), "{out}");
    assert_eq!(
        json(cfg, &["versions", &stack])?.as_array().map(Vec::len),
        Some(2)
    );
    let diff = ok(cfg, &["diff", &stack])?;
    assert!(diff.contains("~ label") || diff.contains("label"), "{diff}");
    // Config vars, scale and rollback: each a new version, followed to
    // completion on the agent.
    let out = ok(
        cfg,
        &[
            "config",
            "set",
            &stack,
            "Web01",
            "STAGE=blue",
            "LABEL=three",
            "--wait",
        ],
    )?;
    assert!(out.contains("UPDATE_COMPLETE"), "{out}");
    let vars = json(cfg, &["config", "get", &stack, "Web01"])?;
    assert_eq!(vars, serde_json::json!({"LABEL": "three", "STAGE": "blue"}));
    let table = ok(cfg, &["config", "get", &stack, "Web01"])?;
    assert!(
        table.starts_with("NAME") && table.contains("blue"),
        "{table}"
    );
    let out = ok(
        cfg,
        &["config", "unset", &stack, "Web01", "STAGE", "--wait"],
    )?;
    assert!(out.contains("UPDATE_COMPLETE"), "{out}");
    let out = ok(cfg, &["scale", &stack, "Web01=0", "--wait"])?;
    assert!(out.contains("UPDATE_COMPLETE"), "{out}");
    let (success, _, err) = flotilla(cfg, &["scale", &stack, "Web01=-1"])?;
    assert!(!success && err.contains("whole number"), "{err}");
    let (success, _, err) = flotilla(cfg, &["scale", &stack, "Nope=1"])?;
    assert!(!success && err.contains("409 unknown_flag"), "{err}");
    // Back to the version before the scale: one instance, LABEL three.
    let out = ok(cfg, &["rollback", &stack, "--wait"])?;
    assert!(out.contains("UPDATE_COMPLETE"), "{out}");
    let body = json(cfg, &["describe", &stack])?;
    assert_eq!(
        body["stack"]["configuration"]["configurations"][0]["provision"]["instance_count"],
        1
    );
    assert_eq!(
        json(cfg, &["config", "get", &stack, "Web01"])?,
        serde_json::json!({"LABEL": "three"})
    );
    let described = ok(cfg, &["describe", &stack])?;
    assert!(described.contains("running"), "{described}");
    let versions = json(cfg, &["versions", &stack])?;
    assert_eq!(versions.as_array().map(Vec::len), Some(6), "{versions}");
    // Two per request: the CLI follows every page to the same list.
    assert_eq!(
        json(cfg, &["--page-size", "2", "versions", &stack])?,
        versions
    );
    let (success, _, err) = flotilla(cfg, &["rollback", &stack, "no-such-version"])?;
    assert!(!success && err.contains("404"), "{err}");
    let described = ok(cfg, &["describe", &stack])?;
    assert!(
        described.contains("i-cli") && described.contains("running"),
        "{described}"
    );

    let agents = ok(cfg, &["agents"])?;
    assert!(
        agents.contains(&agent_id) && agents.contains("connected"),
        "{agents}"
    );
    let statuses = json(
        cfg,
        &["events", "--stack", &stack, "--type", "stack.status"],
    )?;
    let to: Vec<&str> = statuses
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["data"]["to"].as_str())
        .collect();
    assert!(
        to.contains(&"CREATE_COMPLETE") && to.contains(&"UPDATE_COMPLETE"),
        "{to:?}"
    );
    let paged = json(
        cfg,
        &[
            "--page-size",
            "1",
            "events",
            "--stack",
            &stack,
            "--type",
            "stack.status",
        ],
    )?;
    assert_eq!(
        paged, statuses,
        "one event per request, every page followed"
    );
    let restarted = ok(cfg, &["restart", &stack, "i-cli"])?;
    assert!(restarted.contains("restart sent"), "{restarted}");
    let rolled = ok(cfg, &["restart", &stack, "--wait"])?;
    assert!(
        rolled.contains("Web01 on i-cli") && rolled.contains("every instance is back"),
        "{rolled}"
    );
    let stopped = ok(cfg, &["stop", &stack, "--wait"])?;
    assert!(stopped.contains("UPDATE_COMPLETE"), "{stopped}");
    assert_eq!(
        json(cfg, &["describe", &stack])?["containers"][0]["status"],
        "stopped"
    );
    let started = ok(cfg, &["start", &stack, "--wait"])?;
    assert!(started.contains("UPDATE_COMPLETE"), "{started}");
    assert_eq!(
        json(cfg, &["describe", &stack])?["containers"][0]["status"],
        "running"
    );
    let logs = ok(cfg, &["logs", &stack, "i-cli"])?;
    assert!(logs.contains("simulated runtime"), "{logs}");

    // events -f: the live stream prints what happens next.
    let mut follower = Command::new(binary("flotilla")?)
        .args(["events", "-f", "--type", "stack.created", "--json"])
        .env("FLOTILLA_CONFIG_DIR", cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = follower
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                return;
            }
        }
    });
    let first_line = line_rx.recv_timeout(Duration::from_secs(10))?;
    assert!(first_line.contains(&stack), "history first: {first_line}");

    // apply --wait to failure: two instances wanted, one agent.
    let too_many = templates.path().join("too-many.json");
    std::fs::write(&too_many, web_template(2, "many").to_string())?;
    let (success, out, err) = flotilla(
        cfg,
        &[
            "apply",
            "-f",
            too_many.to_str().unwrap_or_default(),
            "--wait",
        ],
    )?;
    assert!(!success, "a failed stack fails the command:\n{out}");
    assert!(err.contains("CREATE_FAILED"), "{err}");
    let live = line_rx.recv_timeout(Duration::from_secs(10))?;
    assert!(
        live.contains("stack.created") && !live.contains(&format!("\"{stack}\"")),
        "{live}"
    );
    let _ = follower.kill();
    let _ = follower.wait();

    let drained = ok(cfg, &["drain", &agent_id])?;
    assert!(
        drained.contains("draining") || drained.contains("drained"),
        "{drained}"
    );
    let undone = ok(cfg, &["drain", &agent_id, "--undo"])?;
    assert!(undone.contains("connected"), "{undone}");

    // The audit trail names what was done to the instance and the agent,
    // and by whom; the table shows the same entries.
    let trail = json(cfg, &["audit"])?;
    let entry = |action: &str| -> Option<Value> {
        trail
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["action"] == action)
            .cloned()
    };
    let restart = entry("instance.restart").ok_or_else(|| anyhow::anyhow!("{trail}"))?;
    assert_eq!(restart["instance_id"], "i-cli", "{restart}");
    assert_eq!(restart["stack_id"], stack.as_str(), "{restart}");
    assert_eq!(
        restart["changes"]["agent_id"],
        agent_id.as_str(),
        "{restart}"
    );
    for action in ["agent.drain", "agent.undrain"] {
        let drain = entry(action).ok_or_else(|| anyhow::anyhow!("{action}: {trail}"))?;
        assert_eq!(drain["target"], agent_id.as_str(), "{drain}");
        assert_eq!(drain["username"], "admin", "{drain}");
    }
    let config = json(
        cfg,
        &["audit", "--stack", &stack, "--action", "stack.config"],
    )?;
    assert!(
        config.as_array().is_some_and(|c| !c.is_empty()
            && c.iter()
                .all(|e| e["action"] == "stack.config" && e["stack_id"] == stack.as_str())),
        "{config}"
    );
    let table = ok(cfg, &["audit", "--action", "agent.drain"])?;
    assert!(
        table.contains("agent.drain")
            && table.contains(&agent_id)
            && !table.contains("agent.undrain"),
        "{table}"
    );

    let (success, _, err) = flotilla(cfg, &["describe", "mo-nope"])?;
    assert!(!success);
    assert!(err.contains("404"), "{err}");
    let out = ok(cfg, &["delete", &stack, "--wait"])?;
    assert!(out.contains("DELETE_COMPLETE"), "{out}");
    Ok(())
}
