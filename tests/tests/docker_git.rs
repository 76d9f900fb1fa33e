//! Code deploys from git, end to end: a local bare repository served over
//! SSH by a test sshd, the real Docker engine, a busybox httpd serving the
//! mounted release.

use flotilla_tests::{ensure_image, free_tcp_port, DockerFleet};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(flotilla_tests::system::tool("git", "git")?)
        .args([
            "-c",
            "user.name=Flotilla Test",
            "-c",
            "user.email=test@flotilla.invalid",
            "-c",
            "init.defaultBranch=master",
        ])
        .args(args)
        .current_dir(dir)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Commits `index.html` with `text` and pushes; returns the commit.
fn publish(work: &Path, text: &str) -> anyhow::Result<String> {
    std::fs::write(work.join("index.html"), text)?;
    git(work, &["add", "index.html"])?;
    git(work, &["commit", "-q", "-m", text])?;
    git(work, &["push", "-q", "origin", "master"])?;
    git(work, &["rev-parse", "HEAD"])
}

fn template(repo: &str, port: u16, reference: &str) -> Value {
    json!({
        "version": "2017-03-03",
        "configurations": [{
            "role": "web", "flag": "Web01", "provision": {"instance_count": 1},
            "container": {
                "image": "flotilla-test/web:1",
                "ports": [format!("127.0.0.1:{port}:80")],
                "stop_grace_period": "2s",
                "codeDir": "/www",
                "gitRepo": repo,
                "gitReference": reference,
                "gitPoll": "1s"
            }
        }]
    })
}

async fn page(port: u16) -> String {
    match reqwest::get(format!("http://127.0.0.1:{port}/index.html")).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn wait_page(port: u16, want: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if page(port).await.contains(want) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!(
        "the page never showed {want:?}; last: {:?}",
        page(port).await
    )
}

/// `err` with the end of the agent's log, to see why a wait ran out.
fn with_agent_log(f: &DockerFleet, err: anyhow::Error) -> anyhow::Error {
    let logs = f.agent.as_ref().map(|a| a.log_text()).unwrap_or_default();
    let tail: Vec<&str> = logs.lines().rev().take(40).collect();
    err.context(tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_deployed_polled_and_pruned() -> anyhow::Result<()> {
    ensure_image("flotilla-test/web:1")?;
    let repos = tempfile::tempdir()?;
    let bare = repos.path().join("site.git");
    let work = repos.path().join("work");
    std::fs::create_dir_all(&bare)?;
    std::fs::create_dir_all(&work)?;
    git(&bare, &["init", "-q", "--bare"])?;
    git(&work, &["init", "-q"])?;
    git(&work, &["remote", "add", "origin", &bare.to_string_lossy()])?;
    let first = publish(&work, "release one")?;
    // Served over SSH: a local path is not a repository the agent may use.
    let server = ssh_server()?;
    let repo = format!("ssh://root@127.0.0.1:{}{}", server.port, bare.display());
    let known = format!("[127.0.0.1]:{} {}\n", server.port, server.host_public_key);
    let template = |repo: &str, port: u16, reference: &str| {
        let mut t = template(repo, port, reference);
        let container = &mut t["configurations"][0]["container"];
        container["gitPrivateKey"] = json!(server.client_private_key);
        container["gitKnownHosts"] = json!(known);
        t
    };

    let f = DockerFleet::start("i-git", &["--heartbeat", "1"], &[]).await?;
    let port = free_tcp_port()?;
    let stack = f.api.apply(&template(&repo, port, "master")).await?;
    let path = format!("/v3/alm/stack/{stack}");
    let described = f
        .api
        .wait_for(&path, Duration::from_secs(60), |s| {
            s["stack_status"] == "CREATE_COMPLETE" || s["stack_status"] == "CREATE_FAILED"
        })
        .await?;
    assert_eq!(described["stack_status"], "CREATE_COMPLETE", "{described}");
    wait_page(port, "release one").await?;
    let containers = f.api.get(&format!("{path}/containers")).await?;
    assert_eq!(
        containers[0]["commit"],
        first.as_str(),
        "the deployed commit is shown per instance"
    );

    // A new commit on the branch redeploys by itself (gitPoll).
    let second = publish(&work, "release two")?;
    wait_page(port, "release two")
        .await
        .map_err(|err| with_agent_log(&f, err))?;
    f.api
        .wait_for(
            &format!("{path}/containers"),
            Duration::from_secs(30),
            |c| c[0]["commit"] == second.as_str(),
        )
        .await?;

    // A bad reference fails clearly and keeps the running release.
    f.api
        .update(&stack, &template(&repo, port, "no-such-branch"))
        .await?;
    let described = f
        .api
        .wait_for(&path, Duration::from_secs(60), |s| {
            s["stack_status"] == "UPDATE_FAILED"
        })
        .await
        .map_err(|err| with_agent_log(&f, err))?;
    let reason = described["stack_status_reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("no-such-branch") && reason.contains("rolled back"),
        "{reason}"
    );
    // Still the running release (a rollback whose container binds the same
    // host port restarts the old one, so it may take a moment to answer).
    wait_page(port, "release two")
        .await
        .map_err(|err| with_agent_log(&f, err))?;

    // Back on master: more releases than are kept; old ones are pruned.
    f.api
        .update(&stack, &template(&repo, port, "master"))
        .await?;
    for n in 3..=8 {
        publish(&work, &format!("release {n}"))?;
        wait_page(port, &format!("release {n}")).await?;
    }
    let releases = f
        .agent_dir
        .path()
        .join("code/releases")
        .join(format!("flotilla-{}-{stack}-Web01", f.agent_id));
    let kept: Vec<String> = std::fs::read_dir(&releases)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(kept.len() <= 5, "at most 5 releases kept: {kept:?}");
    assert!(!kept.contains(&first), "the oldest release is gone");
    Ok(())
}

/// An SSH server on a free loopback port that serves git over SSH with one
/// authorized key. Killed when dropped.
struct SshServer {
    child: std::process::Child,
    port: u16,
    host_public_key: String,
    client_private_key: String,
    _dir: tempfile::TempDir,
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) -> anyhow::Result<()> {
    let status = Command::new(flotilla_tests::system::tool(
        "ssh-keygen",
        "openssh-client",
    )?)
    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
    .arg(path)
    .status()?;
    anyhow::ensure!(status.success(), "ssh-keygen failed");
    Ok(())
}

fn ssh_server() -> anyhow::Result<SshServer> {
    let dir = tempfile::tempdir()?;
    let host_key = dir.path().join("host_key");
    let client_key = dir.path().join("client_key");
    keygen(&host_key)?;
    keygen(&client_key)?;
    std::fs::copy(
        dir.path().join("client_key.pub"),
        dir.path().join("authorized_keys"),
    )?;
    let port = free_tcp_port()?;
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {pid}\n",
        host = host_key.display(),
        auth = dir.path().join("authorized_keys").display(),
        pid = dir.path().join("sshd.pid").display(),
    );
    let config_path = dir.path().join("sshd_config");
    std::fs::write(&config_path, config)?;
    std::fs::create_dir_all("/run/sshd")?;
    let child = Command::new(flotilla_tests::system::tool(
        "/usr/sbin/sshd",
        "openssh-server",
    )?)
    .args(["-D", "-e", "-f"])
    .arg(&config_path)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let host_public_key = std::fs::read_to_string(dir.path().join("host_key.pub"))?;
            let client_private_key = std::fs::read_to_string(&client_key)?;
            return Ok(SshServer {
                child,
                port,
                host_public_key: host_public_key
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" "),
                client_private_key,
                _dir: dir,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("sshd did not start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_key_fetches_over_ssh_with_host_keys_checked() -> anyhow::Result<()> {
    ensure_image("flotilla-test/web:1")?;
    let server = ssh_server()?;
    let repos = tempfile::tempdir()?;
    let bare = repos.path().join("private.git");
    let work = repos.path().join("work");
    std::fs::create_dir_all(&bare)?;
    std::fs::create_dir_all(&work)?;
    git(&bare, &["init", "-q", "--bare"])?;
    git(&work, &["init", "-q"])?;
    git(&work, &["remote", "add", "origin", &bare.to_string_lossy()])?;
    publish(&work, "private release")?;
    let url = format!("ssh://root@127.0.0.1:{}{}", server.port, bare.display());
    let known = format!("[127.0.0.1]:{} {}\n", server.port, server.host_public_key);

    let f = DockerFleet::start("i-git-ssh", &["--heartbeat", "1"], &[]).await?;
    let deploy = |known_hosts: Option<&str>, tofu: bool, port: u16| {
        let mut t = template(&url, port, "master");
        let container = &mut t["configurations"][0]["container"];
        container["gitPrivateKey"] = json!(server.client_private_key);
        if let Some(known) = known_hosts {
            container["gitKnownHosts"] = json!(known);
        }
        container["gitTrustOnFirstUse"] = json!(tofu);
        t
    };
    let outcome = |stack: String| {
        let api = &f.api;
        async move {
            api.wait_for(
                &format!("/v3/alm/stack/{stack}"),
                Duration::from_secs(60),
                |s| s["stack_status"] == "CREATE_COMPLETE" || s["stack_status"] == "CREATE_FAILED",
            )
            .await
        }
    };

    // Known host key: fetched with the key, served.
    let port = free_tcp_port()?;
    let good = f.api.apply(&deploy(Some(&known), false, port)).await?;
    assert_eq!(outcome(good).await?["stack_status"], "CREATE_COMPLETE");
    wait_page(port, "private release").await?;

    // An unknown host, without trust-on-first-use: refused.
    let unknown = f.api.apply(&deploy(None, false, free_tcp_port()?)).await?;
    let described = outcome(unknown).await?;
    assert_eq!(described["stack_status"], "CREATE_FAILED");
    assert!(
        described["stack_status_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("start-failure"),
        "{described}"
    );
    // A mismatched host key: refused.
    let other = ssh_server()?;
    let wrong = format!("[127.0.0.1]:{} {}\n", server.port, other.host_public_key);
    let mismatched = f
        .api
        .apply(&deploy(Some(&wrong), false, free_tcp_port()?))
        .await?;
    assert_eq!(outcome(mismatched).await?["stack_status"], "CREATE_FAILED");
    // Trust on first use when the template asks for it.
    let port = free_tcp_port()?;
    let tofu = f.api.apply(&deploy(None, true, port)).await?;
    assert_eq!(outcome(tofu).await?["stack_status"], "CREATE_COMPLETE");
    wait_page(port, "private release").await?;

    // The key never reaches a log.
    let key_body: String = server
        .client_private_key
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert!(!key_body.is_empty());
    let agent_log = f.agent.as_ref().map(|a| a.log_text()).unwrap_or_default();
    assert!(
        !agent_log.contains(&key_body),
        "the private key is not in the agent's log"
    );
    assert!(
        !f.controller.log_text().contains(&key_body),
        "nor in the controller's"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_unauthenticated_repositories_are_refused_at_apply() -> anyhow::Result<()> {
    let repos = tempfile::tempdir()?;
    let bare = repos.path().join("site.git");
    std::fs::create_dir_all(&bare)?;
    git(&bare, &["init", "-q", "--bare"])?;
    let f = DockerFleet::start("i-git-local", &[], &[]).await?;
    let local = bare.to_string_lossy().into_owned();
    for repo in [
        local.clone(),
        format!("file://{local}"),
        "http://127.0.0.1/site.git".to_owned(),
        "git://127.0.0.1/site.git".to_owned(),
        "ext::sh -c touch% /tmp/flotilla-pwned".to_owned(),
    ] {
        let (status, body) = f
            .api
            .call(
                reqwest::Method::POST,
                "/v3/alm/template",
                Some(&template(&repo, 8080, "master")),
            )
            .await?;
        assert_eq!(status, 400, "{repo}: {body}");
        assert_eq!(
            body["errors"][0]["context"]["path"], "/configurations/0/container/gitRepo",
            "{body}"
        );
    }
    let stacks = f.api.get("/v3/alm/stack").await?;
    assert_eq!(stacks, json!([]), "nothing was stored");
    Ok(())
}
