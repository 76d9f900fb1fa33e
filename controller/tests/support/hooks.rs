//! Webhook receivers on 127.0.0.1:0 that speak HTTP/1.1 over plain TCP,
//! so a test decides exactly when (or whether) a request is answered and
//! sees every request that is open at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Request {
    /// `X-Flotilla-Delivery`: `<hook id>/<event id>`.
    pub delivery: String,
    pub signature: String,
    pub body: Vec<u8>,
}

impl Request {
    pub fn hook_id(&self) -> &str {
        self.delivery.split('/').next().unwrap_or_default()
    }

    pub fn event_id(&self) -> u64 {
        self.delivery
            .rsplit('/')
            .next()
            .and_then(|id| id.parse().ok())
            .unwrap_or_default()
    }
}

/// What a receiver saw, shared with the test.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every request, in arrival order.
    pub requests: Vec<Request>,
    /// Requests open now, per hook.
    pub open: HashMap<String, usize>,
    /// The most requests ever open at once for one hook.
    pub most_open_per_hook: usize,
}

impl Seen {
    pub fn open_now(&self) -> usize {
        self.open.values().sum()
    }
}

/// A receiver: the first `hang_first` requests are never answered (held
/// open until the sender gives up), later ones get 204.
pub struct Receiver {
    pub url: String,
    pub seen: Arc<Mutex<Seen>>,
}

impl Receiver {
    pub async fn start(hang_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let shared = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone(), hang_first));
            }
        });
        Receiver { url, seen }
    }

    pub fn snapshot(&self) -> (Vec<Request>, usize, usize) {
        let seen = self.seen.lock().expect("lock");
        (
            seen.requests.clone(),
            seen.open_now(),
            seen.most_open_per_hook,
        )
    }
}

/// Reads one request: its head, then `Content-Length` bytes of body.
async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim().to_owned())
            .unwrap_or_default()
    };
    let length: usize = header("content-length").parse().unwrap_or(0);
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        delivery: header("x-flotilla-delivery"),
        signature: header("x-flotilla-signature-256"),
        body,
    })
}

async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Seen>>, hang_first: usize) {
    // One request per connection: every answer closes it.
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let hook = request.hook_id().to_owned();
    let hang = {
        let mut seen = seen.lock().expect("lock");
        let hang = seen.requests.len() < hang_first;
        seen.requests.push(request);
        let open = seen.open.entry(hook.clone()).or_default();
        *open += 1;
        let open = *open;
        seen.most_open_per_hook = seen.most_open_per_hook.max(open);
        hang
    };
    if hang {
        // Never answer; wait for the sender to give up and close.
        let mut rest = [0u8; 1024];
        while let Ok(n) = stream.read(&mut rest).await {
            if n == 0 {
                break;
            }
        }
        close(&seen, &hook);
    } else {
        // Closed before answering: the sender may start its next request
        // as soon as it reads the answer.
        close(&seen, &hook);
        let _ = stream
            .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        let _ = stream.shutdown().await;
    }
}

fn close(seen: &Mutex<Seen>, hook: &str) {
    let mut seen = seen.lock().expect("lock");
    if let Some(open) = seen.open.get_mut(hook) {
        *open = open.saturating_sub(1);
    }
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns
/// how long it took.
pub async fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if check() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
