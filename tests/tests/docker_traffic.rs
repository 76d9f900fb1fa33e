//! Host ports routed by the agent (its nftables table): the README's
//! example keeps answering through an update, every request a new
//! connection, probed every 10 ms; and the routes outlive the agent.

use flotilla_tests::{agent_containers, docker, ensure_image, free_tcp_port, DockerFleet};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `examples/web.json` as the README gives it, on a free host port (so it
/// runs beside other tests) and with the test image.
fn readme_example(port: u16, stage: &str) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/web.json"),
    )?;
    let mut template: Value = serde_json::from_str(&text)?;
    let container = &mut template["configurations"][0]["container"];
    container["ports"] = serde_json::json!([format!("127.0.0.1:{port}:80/tcp")]);
    container["image"] = "flotilla-test/web:1".into();
    container["environment_variables"]["STAGE"] = stage.into();
    Ok(template)
}

/// Applies `template` and waits until the stack is complete; its id.
async fn created(api: &flotilla_tests::Api, template: &Value) -> anyhow::Result<String> {
    let stack = api.apply(template).await?;
    api.wait_for(
        &format!("/v3/alm/stack/{stack}"),
        Duration::from_secs(60),
        |s| s["stack_status"] == "CREATE_COMPLETE",
    )
    .await?;
    Ok(stack)
}

/// Whether the agent's nftables table exists.
fn table_exists(agent_id: &str) -> anyhow::Result<bool> {
    let table = flotilla_agent::traffic::rules::table_name(agent_id);
    Ok(std::process::Command::new("nft")
        .args(["list", "table", "ip", &table])
        .output()?
        .status
        .success())
}

struct Probe {
    sent: AtomicUsize,
    failed: AtomicUsize,
    first_failure: std::sync::Mutex<Option<String>>,
    stop: AtomicBool,
}

/// GETs `/` on a new connection every 10 ms until told to stop.
fn probe(port: u16) -> (Arc<Probe>, tokio::task::JoinHandle<()>) {
    let state = Arc::new(Probe {
        sent: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        first_failure: std::sync::Mutex::new(None),
        stop: AtomicBool::new(false),
    });
    let probe = state.clone();
    let task = tokio::spawn(async move {
        let Ok(client) = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(2))
            .build()
        else {
            return;
        };
        let url = format!("http://127.0.0.1:{port}/");
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while !probe.stop.load(Ordering::Relaxed) {
            tick.tick().await;
            probe.sent.fetch_add(1, Ordering::Relaxed);
            let outcome = match client.get(&url).send().await {
                Ok(response) if response.status().is_success() => {
                    response.text().await.map(drop).map_err(|e| e.to_string())
                }
                Ok(response) => Err(format!("answered {}", response.status())),
                Err(err) => Err(err.to_string()),
            };
            if let Err(err) = outcome {
                probe.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = probe.first_failure.lock() {
                    first.get_or_insert(err);
                }
            }
        }
    });
    (state, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_drops_no_request_through_an_update_or_an_agent_restart(
) -> anyhow::Result<()> {
    ensure_image("flotilla-test/web:1")?;
    let mut f = DockerFleet::start("i-traffic", &["--heartbeat", "1"], &[]).await?;
    let port = free_tcp_port()?;
    let stack = created(&f.api, &readme_example(port, "one")?).await?;
    let old = agent_containers(&f.agent_id)?;
    assert_eq!(old.len(), 1);
    let published = docker(&["port", &old[0]])?;
    assert!(
        published.is_empty(),
        "the agent routes the port, Docker publishes nothing: {published}"
    );

    let (state, task) = probe(port);
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.api.update(&stack, &readme_example(port, "two")?).await?;
    f.api
        .wait_for(
            &format!("/v3/alm/stack/{stack}"),
            Duration::from_secs(60),
            |s| s["stack_status"] == "UPDATE_COMPLETE",
        )
        .await?;
    let now = agent_containers(&f.agent_id)?;
    assert_eq!(now.len(), 1, "the old container is gone: {now:?}");
    assert_ne!(now, old);

    // The agent restarts (SIGTERM, then a new process): the port serves
    // throughout, since the kernel holds the routes.
    let agent = f.agent.take().ok_or_else(|| anyhow::anyhow!("no agent"))?;
    agent.terminate()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarted = f.restart_agent(&[])?;
    restarted.wait_log("connected to the controller", Duration::from_secs(20))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.agent = Some(restarted);

    state.stop.store(true, Ordering::Relaxed);
    task.await?;
    let sent = state.sent.load(Ordering::Relaxed);
    let failed = state.failed.load(Ordering::Relaxed);
    let first = state
        .first_failure
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    println!("{sent} requests, {failed} failed");
    assert!(sent > 100, "probed {sent} times");
    assert_eq!(failed, 0, "{failed} of {sent} failed; first: {first:?}");
    Ok(())
}

/// A network namespace wired to this host by a veth pair: "another host"
/// whose connections arrive on a host address and are forwarded.
struct OtherHost {
    ns: String,
    link: String,
    host_ip: String,
    client_ip: String,
}

impl OtherHost {
    fn create() -> anyhow::Result<OtherHost> {
        OtherHost::create_numbered(0)
    }

    /// One of several per test process (`index` apart).
    fn create_numbered(index: u32) -> anyhow::Result<OtherHost> {
        let n = (std::process::id() + index * 7) % 250 + 1;
        let other = OtherHost {
            ns: format!("flt-other-{n}"),
            link: format!("flt-vh-{n}"),
            host_ip: format!("10.251.{n}.1"),
            client_ip: format!("10.251.{n}.2"),
        };
        let peer = format!("flt-vn-{n}");
        let host_cidr = format!("{}/30", other.host_ip);
        let client_cidr = format!("{}/30", other.client_ip);
        for args in [
            vec!["netns", "add", &other.ns],
            vec![
                "link",
                "add",
                &other.link,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ],
            vec!["link", "set", &peer, "netns", &other.ns],
            vec!["addr", "add", &host_cidr, "dev", &other.link],
            vec!["link", "set", &other.link, "up"],
            vec!["-n", &other.ns, "addr", "add", &client_cidr, "dev", &peer],
            vec!["-n", &other.ns, "link", "set", &peer, "up"],
            vec!["-n", &other.ns, "link", "set", "lo", "up"],
            vec![
                "-n",
                &other.ns,
                "route",
                "add",
                "default",
                "via",
                &other.host_ip,
            ],
        ] {
            let out = std::process::Command::new("ip").args(&args).output()?;
            anyhow::ensure!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(other)
    }

    /// GETs `url` from inside the namespace.
    fn get(&self, url: &str) -> anyhow::Result<String> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-sS", "-m", "5", url])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_host_reaches_a_routed_port_with_its_own_source_address() -> anyhow::Result<()> {
    ensure_image("flotilla-test/web:1")?;
    let other = OtherHost::create()?;
    let f = DockerFleet::start("i-traffic-other", &["--heartbeat", "1"], &[]).await?;
    let port = free_tcp_port()?;
    let mut template = readme_example(port, "other")?;
    // Every host address, not only 127.0.0.1.
    template["configurations"][0]["container"]["ports"] =
        serde_json::json!([format!("{port}:80/tcp")]);
    created(&f.api, &template).await?;
    let page = other.get(&format!("http://{}:{port}/", other.host_ip))?;
    assert!(page.contains("Hello from a Flotilla container"), "{page}");
    let local = reqwest::get(format!("http://127.0.0.1:{port}/")).await?;
    assert!(
        local.status().is_success(),
        "and from this host's 127.0.0.1"
    );
    let id = agent_containers(&f.agent_id)?.remove(0);
    // httpd -vv logs each client's address on its standard error.
    let out = std::process::Command::new("docker")
        .args(["logs", &id])
        .output()?;
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(
        logs.contains(&other.client_ip),
        "the container saw the client's own address {}: {logs}",
        other.client_ip
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_ports_are_routed_from_this_host_and_from_another() -> anyhow::Result<()> {
    let image = flotilla_tests::ensure_udp_echo_image()?;
    let other = OtherHost::create_numbered(1)?;
    let f = DockerFleet::start("i-traffic-udp", &["--heartbeat", "1"], &[]).await?;
    let port = free_tcp_port()?;
    let template = serde_json::json!({
        "version": "2017-03-03",
        "label": "udp",
        "configurations": [{"role": "echo", "flag": "Echo01", "provision": {"instance_count": 1},
            "container": {"image": image, "ports": [format!("{port}:5353/udp")], "stop_grace_period": "1s"}}]
    });
    created(&f.api, &template).await?;
    assert!(
        docker(&["port", &agent_containers(&f.agent_id)?.remove(0)])?.is_empty(),
        "Docker publishes nothing"
    );
    // From this host's 127.0.0.1.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(("127.0.0.1", port)).await?;
    socket.send(b"ping").await?;
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf)).await??;
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(reply.starts_with("ping from "), "{reply}");
    // From another host, whose address the container sees.
    let script = format!(
        "exec 3<>/dev/udp/{}/{port}; printf ping >&3; timeout 5 dd bs=256 count=1 <&3 2>/dev/null",
        other.host_ip
    );
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &other.ns, "bash", "-c", &script])
        .output()?;
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(
        reply.starts_with(&format!("ping from {}:", other.client_ip)),
        "{reply:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_to_docker_publishing_removes_the_table_and_republishes() -> anyhow::Result<()> {
    ensure_image("flotilla-test/web:1")?;
    let mut f = DockerFleet::start("i-traffic-mode", &["--heartbeat", "1"], &[]).await?;
    let port = free_tcp_port()?;
    let stack = created(&f.api, &readme_example(port, "mode")?).await?;
    assert!(table_exists(&f.agent_id)?, "the agent's table exists");
    let routed = agent_containers(&f.agent_id)?;

    let agent = f.agent.take().ok_or_else(|| anyhow::anyhow!("no agent"))?;
    agent.terminate()?;
    let restarted = f.restart_agent(&["--published-ports", "docker"])?;
    restarted.wait_log("connected to the controller", Duration::from_secs(20))?;
    f.agent = Some(restarted);
    assert!(!table_exists(&f.agent_id)?, "the table is gone");
    // The container made while the agent routed is made again, published
    // by Docker, and answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = agent_containers(&f.agent_id)?;
        let published = now.iter().any(|id| {
            !routed.contains(id)
                && docker(&["port", id]).is_ok_and(|p| p.contains(&port.to_string()))
        });
        if published {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "not republished: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    f.api
        .wait_for(
            &format!("/v3/alm/stack/{stack}/containers"),
            Duration::from_secs(30),
            |c| c[0]["status"] == "running",
        )
        .await?;
    let page = reqwest::get(format!("http://127.0.0.1:{port}/")).await?;
    assert!(page.status().is_success());
    Ok(())
}
