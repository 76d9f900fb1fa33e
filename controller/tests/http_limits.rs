//! Slow and greedy clients on raw TCP: headers that never finish, idle
//! kept-alive connections, a trickled body, and the connection cap.

mod support;

use flotilla_controller::config::Config;
use std::time::{Duration, Instant};
use support::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far longer than any limit under test, for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

async fn start(tune: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = support::config_for(dir.path());
    tune(&mut config);
    TestServer::start_with(dir, config).await
}

async fn connect(t: &TestServer) -> TcpStream {
    let addr = t.server.as_ref().expect("running").addr;
    TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes the connection; what it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out)).await;
    match read {
        Ok(_) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => panic!(
            "the server kept the connection open: {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
}

/// Reads one whole response (headers and a Content-Length body).
async fn read_response(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed mid-response: {text:?}");
        out.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn headers_that_never_finish_are_cut_off() {
    let t = start(|c| c.http.header_timeout = Duration::from_secs(1)).await;
    let mut stream = connect(&t).await;
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    let answer = read_to_close(&mut stream).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed by the timeout, not at once: {:?}",
        started.elapsed()
    );
    assert!(!answer.contains("200 OK"), "{answer:?}");
    t.stop().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let t = start(|c| c.http.header_timeout = Duration::from_secs(1)).await;
    let mut stream = connect(&t).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let first = read_response(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first:?}");
    assert!(!first.to_ascii_lowercase().contains("connection: close"));
    let idle = Instant::now();
    let rest = read_to_close(&mut stream).await;
    assert_eq!(rest, "", "nothing more was sent");
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "{:?}",
        idle.elapsed()
    );
    t.stop().await;
}

#[tokio::test]
async fn a_trickled_body_is_cut_by_the_body_timeout() {
    let t = start(|c| c.http.body_timeout = Duration::from_secs(1)).await;
    let stream = connect(&t).await;
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(
            b"POST /v3/access_token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
        )
        .await
        .expect("write");
    let started = Instant::now();
    // One byte every 100 ms: never idle long, never done.
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, reader.read_to_end(&mut out))
        .await
        .expect("the server closed the connection in time")
        .ok();
    trickle.abort();
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("\"code\":\"body_timeout\""), "{answer:?}");
    assert!(answer.contains("x-ratelimit-limit"), "{answer:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    t.stop().await;
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let t = start(|c| {
        c.http.max_connections = 2;
        c.http.header_timeout = Duration::from_secs(60);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&t).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        held.push(stream);
    }
    // The third completes its TCP handshake (the backlog) but is not served.
    let mut third = connect(&t).await;
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_secs(1), third.read(&mut byte)).await;
    assert!(early.is_err(), "served past the cap: {early:?}");
    // One held connection goes: the third is served.
    drop(held.pop());
    let answer = read_to_close(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    drop(held);
    t.stop().await;
}

#[tokio::test]
async fn the_limits_hold_over_tls_too() {
    let t = start(|c| {
        c.rest_tls = flotilla_controller::config::RestTls::SelfIssued;
        c.http.header_timeout = Duration::from_secs(1);
    })
    .await;
    // A client that never starts its TLS handshake is cut off as well.
    let mut stream = connect(&t).await;
    let started = Instant::now();
    let answer = read_to_close(&mut stream).await;
    assert_eq!(answer, "");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let reply = t.send(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(reply.status, reqwest::StatusCode::OK, "{}", reply.text);
    assert!(reply.headers.contains_key("x-ratelimit-remaining"));
    t.stop().await;
}
