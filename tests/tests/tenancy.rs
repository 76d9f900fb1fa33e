//! Tenancy with real binaries: pools keep teams' stacks on their own
//! agents, join tokens reach only their pool, and an enrolled instance is
//! never taken over without an admin's say.

use flotilla_tests::{binary, enroll, web_template, AgentProcess, Api, ControllerProcess};
use reqwest::Method;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;

const FAST: &[&str] = &["--heartbeat", "1", "--placement-timeout", "30"];

/// Runs `flotilla` as the holder of `api`'s token; (success, stdout, stderr).
fn flotilla(api: &Api, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let config = tempfile::tempdir()?;
    let output = Command::new(binary("flotilla")?)
        .args(["--url", &api.base, "--token", &api.token])
        .args(args)
        .env("FLOTILLA_CONFIG_DIR", config.path())
        .stdin(Stdio::null())
        .output()?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

fn flotilla_json(api: &Api, args: &[&str]) -> anyhow::Result<Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = flotilla(api, &all)?;
    anyhow::ensure!(ok, "flotilla {args:?}: {out}{err}");
    Ok(serde_json::from_str(&out)?)
}

/// Enrolls `instance` with `token` and starts it (simulated runtime).
async fn start_agent(
    quic: std::net::SocketAddr,
    token: &str,
    fingerprint: &str,
    instance: &str,
) -> anyhow::Result<(tempfile::TempDir, AgentProcess)> {
    let dir = tempfile::tempdir()?;
    let (ok, out, err) = enroll(dir.path(), quic, token, fingerprint, instance)?;
    anyhow::ensure!(ok, "enroll {instance}: {out}{err}");
    let process = AgentProcess::spawn(dir.path(), &[])?;
    process.wait_log("connected to the controller", Duration::from_secs(20))?;
    Ok((dir, process))
}

fn placements_of(agents: &Value, instance: &str) -> Vec<String> {
    agents
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["instance_id"] == instance)
        .flat_map(|a| a["placements"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["stack_id"].as_str().map(str::to_owned))
        .collect()
}

fn pool_of(agents: &Value, instance: &str) -> String {
    agents
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["instance_id"] == instance)
        .and_then(|a| a["pool"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_keep_teams_on_their_own_agents() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(dir.path(), FAST, &[])?;
    let admin = Api::admin(&controller.url(""), dir.path()).await?;
    let bob = admin.user("bob").await?;
    let carol = admin.user("carol").await?;
    let quic = controller.quic_addr;

    // Pools, from the CLI.
    for (pool, user) in [("team-a", "carol"), ("team-b", "bob")] {
        let created = flotilla_json(
            &admin,
            &[
                "pool",
                "create",
                pool,
                "--user",
                user,
                "--allow-host-path",
                "/srv/data",
            ],
        )?;
        assert_eq!(created["users"], json!([user]));
        assert_eq!(created["policy"]["host_paths"], json!(["/srv/data"]));
    }
    let (ok, _, err) = flotilla(&bob, &["pool", "create", "mine", "--user", "bob"])?;
    assert!(
        !ok && err.contains("403"),
        "only admins create pools: {err}"
    );
    let listed = flotilla_json(&bob, &["pools"])?;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["name"], "team-b");

    // Join tokens: each user for their own pool only.
    let (ok, _, err) = flotilla(&bob, &["join-token", "--pool", "team-a"])?;
    assert!(!ok && err.contains("403"), "{err}");
    let (ok, _, err) = flotilla(&bob, &["join-token"])?;
    assert!(
        !ok && err.contains("403"),
        "bob is not in the default pool: {err}"
    );
    let b_token = flotilla_json(&bob, &["join-token", "--pool", "team-b", "--uses", "1"])?;
    assert_eq!(b_token["pool"], "team-b");
    let a_token = flotilla_json(&carol, &["join-token", "--pool", "team-a", "--uses", "2"])?;
    let fingerprint = b_token["ca_fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (_b_dir, b_agent) = start_agent(
        quic,
        b_token["token"].as_str().unwrap_or_default(),
        &fingerprint,
        "i-team-b",
    )
    .await?;
    let (_a_dir, _a_agent) = start_agent(
        quic,
        a_token["token"].as_str().unwrap_or_default(),
        &fingerprint,
        "i-team-a",
    )
    .await?;
    let (d_token, _) = admin.join_token(json!({})).await?;
    let (_d_dir, _d_agent) = start_agent(quic, &d_token, &fingerprint, "i-default").await?;
    let agents = admin.get("/v3/alm/agents").await?;
    assert_eq!(pool_of(&agents, "i-team-b"), "team-b");
    assert_eq!(pool_of(&agents, "i-team-a"), "team-a");
    assert_eq!(pool_of(&agents, "i-default"), "default");
    // The agent list pages: one out of the middle, and the CLI (one per
    // request) following every page to the same list.
    let ids = |list: &Value| -> Vec<Value> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|agent| agent["agent_id"].clone())
            .collect()
    };
    let middle = admin.get("/v3/alm/agents?limit=1&offset=1").await?;
    assert_eq!(ids(&middle), ids(&agents)[1..2].to_vec());
    let walked = flotilla_json(&admin, &["--page-size", "1", "agents"])?;
    assert_eq!(ids(&walked), ids(&agents));
    assert_eq!(ids(&agents).len(), 3);

    // Bob's stack wants two instances; his pool has one agent. It takes
    // that one, never another team's or the default pool's, and says why
    // it waits.
    let bobs = bob.apply(&web_template(2, "bob")).await?;
    let described = bob
        .wait_for(
            &format!("/v3/alm/stack/{bobs}"),
            Duration::from_secs(15),
            |s| {
                s["stack_status_reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("1 of 2"))
            },
        )
        .await?;
    assert_eq!(described["stack_status"], "CREATE_IN_PROGRESS");
    assert_eq!(
        described["stack_status_reason"],
        "Web01: 1 of 2 instance(s) placed, no other connected agent in pool team-b"
    );
    assert_eq!(
        described["pools"],
        json!([{"flag": "Web01", "pool": "team-b"}])
    );
    let carols = carol.apply(&web_template(1, "carol")).await?;
    carol
        .wait_for(
            &format!("/v3/alm/stack/{carols}"),
            Duration::from_secs(15),
            |s| s["stack_status"] == "CREATE_COMPLETE",
        )
        .await?;
    let agents = admin.get("/v3/alm/agents").await?;
    assert_eq!(placements_of(&agents, "i-team-b"), [bobs.as_str()]);
    assert_eq!(placements_of(&agents, "i-team-a"), [carols.as_str()]);
    assert!(placements_of(&agents, "i-default").is_empty(), "{agents}");

    // A pool with agents is not deleted.
    let (status, body) = admin
        .call(Method::DELETE, "/v3/alm/pools/team-b", None)
        .await?;
    assert_eq!(status, 409, "{body}");

    // Carol's token (a pool member's, not an admin's) cannot take over
    // bob's VM by its instance id; the agent there keeps working.
    let other = tempfile::tempdir()?;
    let (ok, out, err) = enroll(
        other.path(),
        quic,
        a_token["token"].as_str().unwrap_or_default(),
        &fingerprint,
        "i-team-b",
    )?;
    assert!(!ok, "{out}");
    assert!(err.contains("instance_in_use"), "{err}");
    let agents = admin.get("/v3/alm/agents").await?;
    let b = agents
        .as_array()
        .and_then(|a| a.iter().find(|a| a["instance_id"] == "i-team-b"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(b["state"], "connected", "{b}");
    assert!(!b_agent.log_text().contains("identity replaced"));
    // The refused attempt spent no use of the token.
    let tokens = carol.get("/v3/alm/agent/join-token").await?;
    assert_eq!(tokens[0]["uses"], 1, "{tokens}");

    // An admin's replacing token may re-enroll it; the old identity goes.
    let (replace, _) = admin
        .join_token(json!({"pool": "team-b", "replace": true}))
        .await?;
    let (ok, out, err) = enroll(other.path(), quic, &replace, &fingerprint, "i-team-b")?;
    assert!(ok, "{out}{err}");
    let agents = admin.get("/v3/alm/agents?include_revoked=true").await?;
    let states: Vec<&str> = agents
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["instance_id"] == "i-team-b")
        .filter_map(|a| a["state"].as_str())
        .collect();
    assert!(states.contains(&"revoked"), "{agents}");
    Ok(())
}
