//! Health probes: an HTTP GET to the container's address on the agent's
//! network, or a command run inside the container (the two forms a
//! pre-stop hook takes too).

use super::super::spec::Probe;
use super::effects::Engine;
use super::engine::describe;
use bollard::exec::{CreateExecOptions, StartExecOptions};
use bollard::Docker;
use http_body_util::Empty;
use hyper::body::Bytes;
use std::time::{Duration, Instant};

/// Runs one probe against a container; `Ok` when healthy.
pub async fn check<E: Engine>(
    engine: &E,
    probe: &Probe,
    container_id: &str,
    ip: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, run(engine, probe, container_id, ip)).await {
        Ok(result) => result,
        Err(_) => Err(format!("probe timed out after {} ms", timeout.as_millis())),
    }
}

async fn run<E: Engine>(
    engine: &E,
    probe: &Probe,
    container_id: &str,
    ip: Option<&str>,
) -> Result<(), String> {
    match probe {
        Probe::Http { path, port } => {
            let ip = ip.ok_or("the container has no address on the agent's network")?;
            let status = http_get(ip, *port, path).await?;
            if status.is_success() || status.is_redirection() {
                Ok(())
            } else {
                Err(format!("GET {path} answered {status}"))
            }
        }
        Probe::Command(argv) => match engine.exec(container_id, argv).await? {
            0 => Ok(()),
            code => Err(format!("{} exited with {code}", argv.join(" "))),
        },
    }
}

/// GETs `path` on the container's `port`; the status it answered.
pub async fn http_get(ip: &str, port: u16, path: &str) -> Result<hyper::StatusCode, String> {
    let stream = tokio::net::TcpStream::connect((ip, port))
        .await
        .map_err(|err| format!("GET http://{ip}:{port}{path}: {err}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|err| format!("GET {path}: {err}"))?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, format!("{ip}:{port}"))
        .header(hyper::header::USER_AGENT, "flotilla-agent-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|err| format!("GET {path}: {err}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| format!("GET {path}: {err}"));
    driver.abort();
    Ok(response?.status())
}

/// Runs `argv` in the container and waits for it; its exit code.
pub async fn exec(docker: &Docker, container_id: &str, argv: &[String]) -> Result<i64, String> {
    let created = docker
        .create_exec(
            container_id,
            CreateExecOptions {
                cmd: Some(argv.to_vec()),
                attach_stdout: Some(false),
                attach_stderr: Some(false),
                ..Default::default()
            },
        )
        .await
        .map_err(|err| describe(&err))?;
    docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(|err| describe(&err))?;
    let started = Instant::now();
    loop {
        let info = docker
            .inspect_exec(&created.id)
            .await
            .map_err(|err| describe(&err))?;
        if info.running != Some(true) {
            return info
                .exit_code
                .ok_or_else(|| format!("{} did not report an exit code", argv.join(" ")));
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!("{} never finished", argv.join(" ")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
