//! Pulls through a real registry (Debian's docker-registry on loopback,
//! basic auth): with the right credentials, the wrong ones, and for an
//! image that is not there.

use flotilla_tests::{agent_containers, docker, ensure_image, free_tcp_port, DockerFleet};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const USER: &str = "deployer";
const PASSWORD: &str = "s3cret-registry-password";

struct Registry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry() -> anyhow::Result<Registry> {
    let dir = tempfile::tempdir()?;
    let htpasswd = Command::new(flotilla_tests::system::tool("htpasswd", "apache2-utils")?)
        .args(["-Bbn", USER, PASSWORD])
        .output()?;
    anyhow::ensure!(htpasswd.status.success(), "htpasswd failed");
    std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout)?;
    let port = free_tcp_port()?;
    let addr = format!("127.0.0.1:{port}");
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: flotilla-test\n    path: {htpasswd}\n",
        root = dir.path().join("data").display(),
        htpasswd = dir.path().join("htpasswd").display(),
    );
    let config_path = dir.path().join("config.yml");
    std::fs::write(&config_path, config)?;
    let child = Command::new(flotilla_tests::system::tool(
        "docker-registry",
        "docker-registry",
    )?)
    .arg("serve")
    .arg(&config_path)
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            return Ok(Registry {
                child,
                addr,
                _dir: dir,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("the registry did not start")
}

/// A docker client config logged in to the registry (the test's own,
/// not the agent's).
fn login(registry: &Registry) -> anyhow::Result<tempfile::TempDir> {
    let config = tempfile::tempdir()?;
    let config_dir = config.path().to_string_lossy().into_owned();
    let mut login = Command::new("docker")
        .args([
            "--config",
            &config_dir,
            "login",
            &registry.addr,
            "-u",
            USER,
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = login
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        stdin.write_all(PASSWORD.as_bytes())?;
    }
    anyhow::ensure!(login.wait()?.success(), "docker login failed");
    Ok(config)
}

/// Runs `docker --config <logged in> args`.
fn docker_logged_in(config: &tempfile::TempDir, args: &[&str]) -> anyhow::Result<()> {
    let config_dir = config.path().to_string_lossy().into_owned();
    let done = Command::new("docker")
        .args(["--config", &config_dir])
        .args(args)
        .output()?;
    anyhow::ensure!(
        done.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    Ok(())
}

/// Pushes the test image as `<registry>/private/web:1` and removes the
/// local copy of that name, so the agent has to pull it.
fn push(registry: &Registry) -> anyhow::Result<String> {
    ensure_image("flotilla-test/web:1")?;
    let image = format!("{}/private/web:1", registry.addr);
    docker(&["tag", "flotilla-test/web:1", &image])?;
    let config = login(registry)?;
    docker_logged_in(&config, &["push", &image])?;
    docker(&["rmi", &image])?;
    Ok(image)
}

fn template(container: Value) -> Value {
    json!({
        "version": "2017-03-03",
        "configurations": [{"role": "web", "flag": "Web01", "provision": {"instance_count": 1}, "container": container}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_use_registry_credentials_and_name_the_failures() -> anyhow::Result<()> {
    let registry = registry()?;
    let image = push(&registry)?;
    let fleet = DockerFleet::start("i-registry", &["--heartbeat", "1"], &[]).await?;
    let (api, controller, agent, agent_id) = (
        &fleet.api,
        &fleet.controller,
        fleet
            .agent
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no agent"))?,
        fleet.agent_id.clone(),
    );
    let wait = |stack: String| async move {
        api.wait_for(
            &format!("/v3/alm/stack/{stack}"),
            Duration::from_secs(90),
            |s| s["stack_status"] == "CREATE_COMPLETE" || s["stack_status"] == "CREATE_FAILED",
        )
        .await
    };

    // Wrong password: refused by the registry, reported as such.
    let wrong = api
        .apply(&template(
            json!({"image": image, "registry": {"username": USER, "password": "wrong-password"}}),
        ))
        .await?;
    let described = wait(wrong).await?;
    assert_eq!(described["stack_status"], "CREATE_FAILED", "{described}");
    let reason = described["stack_status_reason"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        reason.contains("start-failure")
            && (reason.contains("unauthorized") || reason.contains("authentication")),
        "{reason}"
    );
    assert!(
        !reason.contains("wrong-password"),
        "credentials never appear in reasons"
    );

    // No credentials at all: refused too.
    let anonymous = api.apply(&template(json!({"image": image}))).await?;
    assert_eq!(wait(anonymous).await?["stack_status"], "CREATE_FAILED");

    // A missing image with the right credentials: the registry's reason.
    let missing = format!("{}/private/missing:1", registry.addr);
    let absent = api
        .apply(&template(
            json!({"image": missing, "registry": {"username": USER, "password": PASSWORD}}),
        ))
        .await?;
    let described = wait(absent).await?;
    assert_eq!(described["stack_status"], "CREATE_FAILED");
    let reason = described["stack_status_reason"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(reason.contains("private/missing"), "{reason}");

    // The right credentials: pulled and running.
    let good = api
        .apply(&template(json!({"image": image, "registry": {"username": USER, "password": PASSWORD}, "pull_policy": "always"})))
        .await?;
    let described = wait(good).await?;
    assert_eq!(described["stack_status"], "CREATE_COMPLETE", "{described}");
    let ids = agent_containers(&agent_id)?;
    assert_eq!(ids.len(), 1);
    assert_eq!(
        docker(&["inspect", "-f", "{{.Config.Image}}", &ids[0]])?,
        image
    );
    for secret in [PASSWORD, "wrong-password"] {
        assert!(
            !agent.log_text().contains(secret),
            "registry passwords never reach the agent's log"
        );
        assert!(
            !controller.log_text().contains(secret),
            "nor the controller's"
        );
    }
    let _ = docker(&["rmi", "-f", &image]);
    Ok(())
}

async fn settled(api: &flotilla_tests::Api, stack: &str) -> anyhow::Result<Value> {
    api.wait_for(
        &format!("/v3/alm/stack/{stack}"),
        Duration::from_secs(90),
        |s| s["stack_status"] == "CREATE_COMPLETE" || s["stack_status"] == "CREATE_FAILED",
    )
    .await
}

/// Every container of a stack, running or not.
fn stack_containers(stack: &str) -> anyhow::Result<Vec<String>> {
    flotilla_tests::docker_ids(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=flotilla.stack={stack}"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pulled_with_credentials_serves_no_stack_without_them() -> anyhow::Result<()> {
    let registry = registry()?;
    let image = push(&registry)?;
    let fleet = DockerFleet::start("i-registry-2", &["--heartbeat", "1"], &[]).await?;
    let api = &fleet.api;
    let good = json!({"username": USER, "password": PASSWORD});

    // Stack a, with credentials: pulled, running.
    let a = api
        .apply(&template(json!({"image": image, "registry": good})))
        .await?;
    let described = settled(api, &a).await?;
    assert_eq!(described["stack_status"], "CREATE_COMPLETE", "{described}");

    // Stack b names the same image, now cached, without credentials: it
    // must pull it itself, and the registry refuses.
    let b = api.apply(&template(json!({"image": image}))).await?;
    let described = settled(api, &b).await?;
    assert_eq!(described["stack_status"], "CREATE_FAILED", "{described}");
    let reason = described["stack_status_reason"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        reason.contains("start-failure") && (reason.contains("auth") || reason.contains("denied")),
        "{reason}"
    );
    assert!(
        stack_containers(&b)?.is_empty(),
        "no container of b was ever created"
    );

    // Stack c, cached image and wrong credentials: the manifest check fails.
    let c = api
        .apply(&template(
            json!({"image": image, "registry": {"username": USER, "password": "wrong-password"}}),
        ))
        .await?;
    let described = settled(api, &c).await?;
    assert_eq!(described["stack_status"], "CREATE_FAILED", "{described}");
    let reason = described["stack_status_reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("registry check"), "{reason}");
    assert!(!reason.contains("wrong-password"), "{reason}");
    assert!(stack_containers(&c)?.is_empty());

    // Stack d, cached image and the right credentials: checked, running.
    let d = api
        .apply(&template(json!({"image": image, "registry": good})))
        .await?;
    let described = settled(api, &d).await?;
    assert_eq!(described["stack_status"], "CREATE_COMPLETE", "{described}");
    assert_eq!(stack_containers(&a)?.len(), 1);
    let _ = docker(&["rm", "-f", &stack_containers(&a)?.join(" ")]);
    drop(fleet);
    let _ = docker(&["rmi", "-f", &image]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_image_pulled_without_a_record_is_not_borrowed() -> anyhow::Result<()> {
    let registry = registry()?;
    let image = push(&registry)?;
    // Pulled on the VM with credentials, but not by this agent (by hand,
    // or by an agent from before it kept records): who may use it is
    // unknown.
    docker_logged_in(&login(&registry)?, &["pull", &image])?;
    let fleet = DockerFleet::start("i-registry-4", &["--heartbeat", "1"], &[]).await?;
    let api = &fleet.api;
    let b = api.apply(&template(json!({"image": image}))).await?;
    let described = settled(api, &b).await?;
    assert_eq!(described["stack_status"], "CREATE_FAILED", "{described}");
    let reason = described["stack_status_reason"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        reason.contains("auth") || reason.contains("denied"),
        "pulled again without credentials, and refused: {reason}"
    );
    assert!(stack_containers(&b)?.is_empty());
    // With the credentials it runs (the registry check passes).
    let good = json!({"username": USER, "password": PASSWORD});
    let a = api
        .apply(&template(json!({"image": image, "registry": good})))
        .await?;
    let described = settled(api, &a).await?;
    assert_eq!(described["stack_status"], "CREATE_COMPLETE", "{described}");
    let _ = docker(&["rm", "-f", &stack_containers(&a)?.join(" ")]);
    drop(fleet);
    let _ = docker(&["rmi", "-f", &image]);
    Ok(())
}

/// Builds an image outside Flotilla (the test image plus a label).
fn build_outside(tag: &str) -> anyhow::Result<()> {
    ensure_image("flotilla-test/web:1")?;
    let mut build = Command::new("docker")
        .args(["build", "-q", "-t", tag, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = build
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        stdin.write_all(b"FROM flotilla-test/web:1\nLABEL built-outside=flotilla\n")?;
    }
    anyhow::ensure!(build.wait()?.success(), "docker build failed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_only_images_the_agent_pulled() -> anyhow::Result<()> {
    let registry = registry()?;
    let image = push(&registry)?;
    let outside = format!("flotilla-test/outside-{}:1", std::process::id());
    build_outside(&outside)?;
    let fleet = DockerFleet::start_with(
        "i-registry-3",
        &["--heartbeat", "1"],
        &[],
        &["--cleanup-interval", "1", "--image-prune-age", "0"],
    )
    .await?;
    let api = &fleet.api;
    let stack = api
        .apply(&template(
            json!({"image": image, "registry": {"username": USER, "password": PASSWORD}}),
        ))
        .await?;
    let described = settled(api, &stack).await?;
    assert_eq!(described["stack_status"], "CREATE_COMPLETE", "{described}");
    // In use: clean-ups come and go, the image stays.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(docker(&["image", "inspect", &image]).is_ok(), "in use");

    let (status, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/v3/alm/stack/{stack}"),
            None,
        )
        .await?;
    assert_eq!(status, 202);
    api.wait_for(
        &format!("/v3/alm/stack/{stack}"),
        Duration::from_secs(60),
        |s| s["stack_status"] == "DELETE_COMPLETE",
    )
    .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while docker(&["image", "inspect", &image]).is_ok() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the unused image the agent pulled was not pruned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kept = docker(&["image", "inspect", "-f", "{{.Id}}", &outside]);
    let _ = docker(&["rmi", "-f", &outside]);
    assert!(
        kept.is_ok(),
        "an image built outside Flotilla survives prune"
    );
    assert!(docker(&["image", "inspect", "flotilla-test/web:1"]).is_ok());
    Ok(())
}
