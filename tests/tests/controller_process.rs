//! The real `flotilla-controller` binary: first start, credentials, restarts
//! (clean and kill -9), the client command, configuration sources, and
//! secrets kept out of the logs.

use flotilla_tests::{admin_credentials, controller_command, token, ControllerProcess};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;

fn template() -> Value {
    json!({
        "version": "2017-03-03",
        "label": "e2e",
        "vendor": {"aws": {"cred": "AKIAVENDORSECRET", "region": "ap-northeast-1"}},
        "configurations": [{
            "role": "web", "flag": "Web01",
            "provision": {"instance_type": "t2.micro", "instance_count": 1},
            "container": {
                "image": "nginx",
                "gitPrivateKey": "-----BEGIN PRIVATE KEY-----\nGITKEYSECRET\n-----END PRIVATE KEY-----\n",
                "environment_variables": {"DB_PASSWORD": "ENVSECRET"}
            }
        }]
    })
}

async fn apply(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<Value> {
    let reply = http
        .post(format!("{base}/v3/alm/template"))
        .bearer_auth(token)
        .json(&template())
        .send()
        .await?;
    assert_eq!(reply.status().as_u16(), 201);
    Ok(reply.json().await?)
}

#[tokio::test]
async fn first_start_writes_private_admin_credentials_and_restarts_keep_everything(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(dir.path(), &[], &[])?;
    let credentials = dir.path().join("admin-credentials.json");
    assert_eq!(
        std::fs::metadata(&credentials)?.permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(dir.path())?.permissions().mode() & 0o777,
        0o700
    );
    let (id, secret) = admin_credentials(dir.path())?;
    let logs = controller.log_text();
    assert!(
        logs.contains("admin-credentials.json"),
        "the log says where the credentials are"
    );
    assert!(!logs.contains(&secret), "but never the secret");

    let http = reqwest::Client::new();
    let base = controller.url("");
    let access = token(&http, &base, &id, &secret).await?;
    let applied = apply(&http, &base, &access).await?;
    let stack_id = applied["template_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let describe = |base: String, access: String, stack_id: String| {
        let http = http.clone();
        async move {
            http.get(format!("{base}/v3/alm/stack/{stack_id}"))
                .bearer_auth(access)
                .send()
                .await?
                .json::<Value>()
                .await
        }
    };
    // Once the scheduler has said why the stack waits (no agent): that
    // reason is stored and must survive the restart too.
    let mut before = describe(base.clone(), access.clone(), stack_id.clone()).await?;
    for _ in 0..100 {
        if before["stack_status_reason"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        before = describe(base.clone(), access.clone(), stack_id.clone()).await?;
    }
    assert!(before["stack_status_reason"].is_string(), "{before}");
    let auth_token = before["auth_token"].as_str().unwrap_or_default().to_owned();
    let status = http
        .post(format!("{base}/v3/event/container/status"))
        .bearer_auth(&access)
        .json(&json!({"stack_id": stack_id, "instance_id": "i-1", "status": "running"}))
        .send()
        .await?;
    assert_eq!(status.status().as_u16(), 202);

    // A clean stop (SIGTERM) exits 0; the old token still works afterwards.
    let logs = controller.log_text();
    let exit = controller.terminate()?;
    assert!(exit.success(), "SIGTERM exits cleanly: {exit:?}");
    let controller = ControllerProcess::spawn(dir.path(), &[], &[])?;
    let base = controller.url("");
    let after = describe(base.clone(), access.clone(), stack_id.clone()).await?;
    assert_eq!(after, before);
    assert_eq!(
        admin_credentials(dir.path())?,
        (id.clone(), secret.clone()),
        "admin not recreated"
    );

    // kill -9 right after acknowledged writes: they are on disk.
    let second = apply(&http, &base, &access).await?;
    let second_id = second["template_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let fresh_token = token(&http, &base, &id, &secret).await?;
    let logs = logs + &controller.log_text();
    controller.kill9()?;
    let controller = ControllerProcess::spawn(dir.path(), &[], &[])?;
    let base = controller.url("");
    let survived = describe(base.clone(), fresh_token.clone(), second_id.clone()).await?;
    assert_eq!(survived["stack_id"], second_id.as_str(), "{survived}");
    let containers: Value = http
        .get(format!("{base}/v3/alm/stack/{stack_id}/containers"))
        .bearer_auth(&fresh_token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(containers[0]["status"], "running");

    // No secret ever reached the log, even at debug level.
    let logs = logs + &controller.log_text();
    for secret_value in [
        secret.as_str(),
        access.as_str(),
        fresh_token.as_str(),
        auth_token.as_str(),
        "GITKEYSECRET",
        "AKIAVENDORSECRET",
        "ENVSECRET",
    ] {
        assert!(!logs.contains(secret_value), "a secret appeared in the log");
    }
    assert!(
        logs.contains("\"route\":\"/v3/alm/template\""),
        "requests are logged with their route"
    );
    controller.terminate()?;
    Ok(())
}

#[tokio::test]
async fn bootstrap_credentials_come_from_the_environment() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let env = [
        ("FLOTILLA_BOOTSTRAP_CLIENT_ID", "automation-admin"),
        (
            "FLOTILLA_BOOTSTRAP_CLIENT_SECRET",
            "a-long-enough-bootstrap-secret",
        ),
    ];
    let controller = ControllerProcess::spawn(dir.path(), &[], &env)?;
    let http = reqwest::Client::new();
    let access = token(
        &http,
        &controller.url(""),
        "automation-admin",
        "a-long-enough-bootstrap-secret",
    )
    .await?;
    assert!(!access.is_empty());
    assert!(!controller
        .log_text()
        .contains("a-long-enough-bootstrap-secret"));
    controller.terminate()?;

    // A too-short bootstrap secret is refused at start.
    let other = tempfile::tempdir()?;
    let weak = [
        ("FLOTILLA_BOOTSTRAP_CLIENT_ID", "x"),
        ("FLOTILLA_BOOTSTRAP_CLIENT_SECRET", "short"),
    ];
    assert!(ControllerProcess::spawn(other.path(), &[], &weak).is_err());
    Ok(())
}

#[tokio::test]
async fn client_command_works_with_and_without_a_running_server() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(dir.path(), &[], &[])?;
    let server = controller.url("");
    // While the server holds the store, the command goes through its REST API.
    let (ok, out, err) = controller_command(
        dir.path(),
        &[
            "client",
            "--server",
            &server,
            "--json",
            "create",
            "--username",
            "carol",
        ],
        &[],
    )?;
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out)?;
    let carol_id = created["client_id"].as_str().unwrap_or_default().to_owned();
    let carol_secret = created["client_secret"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let http = reqwest::Client::new();
    token(&http, &server, &carol_id, &carol_secret).await?;
    let (ok, out, err) =
        controller_command(dir.path(), &["client", "--server", &server, "list"], &[])?;
    assert!(ok, "{err}");
    assert!(out.contains(&carol_id) && out.contains("carol"), "{out}");
    assert!(!out.contains(&carol_secret));
    let (ok, _, err) = controller_command(
        dir.path(),
        &["client", "--server", &server, "revoke", &carol_id],
        &[],
    )?;
    assert!(ok, "{err}");
    assert!(
        token(&http, &server, &carol_id, &carol_secret)
            .await
            .is_err(),
        "revoked client cannot log in"
    );
    let (ok, _, err) = controller_command(
        dir.path(),
        &["client", "--server", &server, "revoke", "fc-none"],
        &[],
    )?;
    assert!(!ok && err.contains("not found"), "{err}");
    controller.terminate()?;

    // With the server stopped, the command opens the store itself.
    let (ok, out, err) = controller_command(
        dir.path(),
        &[
            "client",
            "--json",
            "create",
            "--username",
            "dave",
            "--admin",
        ],
        &[],
    )?;
    assert!(ok, "{err}");
    let dave: Value = serde_json::from_str(&out)?;
    let (ok, out, _) = controller_command(dir.path(), &["client", "--json", "list"], &[])?;
    assert!(ok);
    let list: Value = serde_json::from_str(&out)?;
    assert_eq!(list.as_array().map(Vec::len), Some(3), "{list}");
    let controller = ControllerProcess::spawn(dir.path(), &[], &[])?;
    let dave_token = token(
        &http,
        &controller.url(""),
        dave["client_id"].as_str().unwrap_or_default(),
        dave["client_secret"].as_str().unwrap_or_default(),
    )
    .await?;
    let clients = http
        .get(controller.url("/v3/admin/clients"))
        .bearer_auth(dave_token)
        .send()
        .await?;
    assert_eq!(clients.status().as_u16(), 200, "dave is an admin");
    let (ok, _, err) = controller_command(
        dir.path(),
        &["client", "create", "--username", "bad name!"],
        &[],
    )?;
    assert!(!ok && err.contains("username"), "{err}");
    controller.terminate()?;
    Ok(())
}

#[tokio::test]
async fn settings_come_from_flags_environment_and_a_config_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("controller.toml");
    std::fs::write(&file, "body_limit = 2048\ntoken_ttl = 120\n")?;
    let config = file.to_string_lossy().into_owned();
    let controller = ControllerProcess::spawn(
        dir.path(),
        &["--config", &config],
        &[("FLOTILLA_TOKEN_TTL", "60")],
    )?;
    let http = reqwest::Client::new();
    let base = controller.url("");
    let (id, secret) = admin_credentials(dir.path())?;
    let reply: Value = http
        .post(format!("{base}/v3/access_token"))
        .json(
            &json!({"grant_type": "client_credentials", "client_id": id, "client_secret": secret}),
        )
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(reply["expires_in"], 60, "environment beats the file");
    let big = http
        .post(format!("{base}/v3/alm/template"))
        .bearer_auth(reply["access_token"].as_str().unwrap_or_default())
        .header("Content-Type", "application/json")
        .body(format!("{{\"label\":\"{}\"}}", "x".repeat(4096)))
        .send()
        .await?;
    assert_eq!(big.status().as_u16(), 413, "the file's body limit applies");
    controller.terminate()?;

    std::fs::write(&file, "listen_on = 1\n")?;
    let (ok, _, err) =
        controller_command(dir.path(), &["--config", &config, "client", "list"], &[])?;
    assert!(
        !ok && err.contains("listen_on"),
        "unknown config keys are refused: {err}"
    );
    Ok(())
}

#[tokio::test]
async fn join_token_command_works_with_and_without_a_running_server() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(dir.path(), &[], &[])?;
    let server = controller.url("");
    let (ok, out, err) = controller_command(
        dir.path(),
        &[
            "join-token",
            "--server",
            &server,
            "--json",
            "create",
            "--uses",
            "2",
            "--ttl",
            "600",
        ],
        &[],
    )?;
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out)?;
    assert_eq!(
        created["ca_fingerprint"],
        controller.ca_fingerprint.as_str()
    );
    assert_eq!(created["max_uses"], 2);
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let (ok, out, err) = controller_command(
        dir.path(),
        &["join-token", "--server", &server, "list"],
        &[],
    )?;
    assert!(
        ok && out.contains(&id) && out.contains("active"),
        "{out}{err}"
    );
    let (ok, out, err) = controller_command(
        dir.path(),
        &["join-token", "--server", &server, "revoke", &id],
        &[],
    )?;
    assert!(ok && out.contains("revoked"), "{out}{err}");
    let fingerprint = controller.ca_fingerprint.clone();
    controller.terminate()?;
    let (ok, out, err) = controller_command(dir.path(), &["join-token", "--json", "create"], &[])?;
    assert!(ok, "{err}");
    let offline: Value = serde_json::from_str(&out)?;
    assert_eq!(
        offline["ca_fingerprint"],
        fingerprint.as_str(),
        "same CA when the server is down"
    );
    let (ok, out, _) = controller_command(dir.path(), &["join-token", "list"], &[])?;
    assert!(
        ok && out.contains("revoked") && out.contains("active"),
        "{out}"
    );
    Ok(())
}
