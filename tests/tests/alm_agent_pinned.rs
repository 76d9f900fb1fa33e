//! The original alm-agent on a VM without a metadata service leaves
//! `instance_id` out of its reports: they are about the one agent pinned to
//! the stack.

use flotilla_tests::{enroll, web_template, AgentProcess, Api, ControllerProcess};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_without_an_instance_id_are_about_the_pinned_agent() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(dir.path(), &["--heartbeat", "1"], &[])?;
    let api = Api::admin(&controller.url(""), dir.path()).await?;
    let stack = api.apply(&web_template(1, "pinned")).await?;
    let (token, fingerprint) = api
        .join_token(serde_json::json!({"stack_id": stack, "flag": "Web01"}))
        .await?;
    let vm = tempfile::tempdir()?;
    let (ok, out, err) = enroll(
        vm.path(),
        controller.quic_addr,
        &token,
        &fingerprint,
        "i-pinned",
    )?;
    anyhow::ensure!(ok, "{out}{err}");
    let agent = AgentProcess::spawn(vm.path(), &[])?;
    agent.wait_log("connected to the controller", Duration::from_secs(20))?;
    api.wait_for(
        &format!("/v3/alm/stack/{stack}"),
        Duration::from_secs(20),
        |s| s["stack_status"] == "CREATE_COMPLETE",
    )
    .await?;

    // The alm-agent's own token: the stack's id and auth_token.
    let described = api.get(&format!("/v3/alm/stack/{stack}")).await?;
    let auth = described["auth_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let stack_token = flotilla_tests::token(&api.http, &api.base, &stack, &auth).await?;
    let post = |path: &str, form: Vec<(&str, &str)>| {
        api.http
            .post(format!("{}{path}", api.base))
            .bearer_auth(&stack_token)
            .form(&form)
            .send()
    };
    let reply = post(
        "/v3/alm/agent/container_status",
        vec![
            ("agent_id", "alm-1"),
            ("container_id", ""),
            ("stack_id", &stack),
            ("status", "running"),
        ],
    )
    .await?;
    assert_eq!(reply.status().as_u16(), 200);
    let containers = api
        .get(&format!("/v3/alm/stack/{stack}/containers"))
        .await?;
    assert_eq!(containers[0]["instance_id"], "i-pinned", "{containers}");

    // Its spot notice, with an empty instance id, drains the pinned agent.
    let reply = post(
        "/v3/event/spot/shutdown",
        vec![("instance_id", ""), ("stack_id", &stack), ("user_id", "u")],
    )
    .await?;
    assert_eq!(reply.status().as_u16(), 202);
    let agents = api
        .wait_for("/v3/alm/agents", Duration::from_secs(5), |a| {
            a.as_array().is_some_and(|a| {
                a.iter()
                    .any(|a| a["instance_id"] == "i-pinned" && a["drain"].is_object())
            })
        })
        .await?;
    assert!(agents.to_string().contains("i-pinned"));
    Ok(())
}
