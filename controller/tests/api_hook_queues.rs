//! Webhook queues: a receiver that never answers holds up only its own
//! hooks, each hook has at most one request open and keeps event order
//! (across a restart too), and the README's receiver checks signatures
//! and refuses replays.

mod support;

use flotilla_controller::hooks::{signature, MAX_IN_FLIGHT, MAX_IN_FLIGHT_PER_USER};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::hooks::{within, Receiver};
use support::{reference_v1, TestServer};

async fn server_with_timeout(timeout: Duration) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = support::config_for(dir.path());
    config.webhook_timeout = timeout;
    TestServer::start_with(dir, config).await
}

/// Subscribes `url` to every event; returns (hook id, secret).
async fn subscribe(t: &TestServer, token: &str, url: &str) -> (String, String) {
    let reply = t.post("/v3/hooks", token, &json!({ "url": url })).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let hook = reply.json();
    (
        hook["id"].as_str().expect("id").to_owned(),
        hook["secret"].as_str().expect("secret").to_owned(),
    )
}

/// Polls a hook's deliveries until every one is delivered (at least
/// `count`), for at most `limit`.
async fn all_delivered(
    t: &TestServer,
    token: &str,
    hook: &str,
    count: usize,
    limit: Duration,
) -> Value {
    let path = format!("/v3/hooks/{hook}/deliveries");
    let started = Instant::now();
    loop {
        let deliveries = t.get(&path, token).await.json();
        let list = deliveries.as_array().cloned().unwrap_or_default();
        if list.len() >= count && list.iter().all(|d| d["state"] == "delivered") {
            return deliveries;
        }
        assert!(
            started.elapsed() < limit,
            "not all delivered in {limit:?}: {deliveries}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server with attempts timing out after `timeout`, Alice's hook at a
/// receiver hanging its first `hang_first` requests, and `stacks` of
/// Alice's stacks applied; returns (server, Alice's token, receiver, hook).
async fn one_hook(
    timeout: Duration,
    hang_first: usize,
    stacks: usize,
) -> (TestServer, String, Receiver, String) {
    let t = server_with_timeout(timeout).await;
    let (_, _, alice) = t.user("alice").await;
    let receiver = Receiver::start(hang_first).await;
    let (hook, _) = subscribe(&t, &alice, &receiver.url).await;
    for _ in 0..stacks {
        t.apply(&alice, &reference_v1()).await;
    }
    (t, alice, receiver, hook)
}

/// The event ids of a deliveries listing, in its order.
fn event_ids(deliveries: &Value) -> Vec<u64> {
    deliveries
        .as_array()
        .expect("list")
        .iter()
        .map(|d| d["event_id"].as_u64().expect("event id"))
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[tokio::test]
async fn a_receiver_that_never_answers_holds_up_only_its_own_hooks() {
    // Attempts time out after 30 s: if Bob's delivery waited behind
    // Alice's, it would take at least that long.
    let t = server_with_timeout(Duration::from_secs(30)).await;
    let (_, _, alice) = t.user("alice").await;
    let (_, _, bob) = t.user("bob").await;
    let stuck = Receiver::start(usize::MAX).await;
    let good = Receiver::start(0).await;
    for _ in 0..64 {
        subscribe(&t, &alice, &stuck.url).await;
    }
    let (bob_hook, bob_secret) = subscribe(&t, &bob, &good.url).await;
    // Two stacks: every one of Alice's hooks has several deliveries queued.
    t.apply(&alice, &reference_v1()).await;
    t.apply(&alice, &reference_v1()).await;
    let stuck_seen = stuck.seen.clone();
    within(Duration::from_secs(10), || {
        stuck_seen.lock().expect("lock").open_now() > 0
    })
    .await
    .expect("Alice's deliveries reach the receiver that never answers");

    t.apply(&bob, &reference_v1()).await;
    let good_seen = good.seen.clone();
    let took = within(Duration::from_secs(10), || {
        !good_seen.lock().expect("lock").requests.is_empty()
    })
    .await
    .expect("Bob's delivery arrives while Alice's receiver hangs");
    let (requests, open, most_per_hook) = stuck.snapshot();
    eprintln!(
        "Bob's first delivery took {took:?}; {open} of Alice's requests open, {} made",
        requests.len()
    );
    assert!(open > 0, "Alice's requests were still hanging");
    assert!(
        open <= MAX_IN_FLIGHT_PER_USER,
        "one user's hooks hold at most their share: {open}"
    );
    assert_eq!(most_per_hook, 1, "at most one open request per hook");
    let mut per_hook: HashMap<&str, usize> = HashMap::new();
    for request in &requests {
        *per_hook.entry(request.hook_id()).or_default() += 1;
    }
    assert!(
        per_hook.values().all(|&n| n == 1),
        "a hook's later deliveries wait behind its hanging one: {per_hook:?}"
    );
    let metrics = t.raw(t.http.get(t.url("/metrics"))).await.text;
    let running: usize = metrics
        .lines()
        .find_map(|line| line.strip_prefix("flotilla_webhook_attempts_in_flight "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no attempts gauge in {metrics}"));
    assert!(
        (1..=MAX_IN_FLIGHT).contains(&running),
        "attempts running: {running}"
    );
    let delivered = all_delivered(&t, &bob, &bob_hook, 1, Duration::from_secs(10)).await;
    for request in good.snapshot().0 {
        assert!(
            request.delivery.starts_with(&bob_hook),
            "{}",
            request.delivery
        );
        let checked = signature::verify(
            &request.signature,
            &bob_secret,
            &request.body,
            unix_now(),
            Duration::from_secs(300),
        );
        assert!(checked.is_ok(), "{checked:?}");
    }
    assert!(delivered[0]["attempts"] == 1, "{delivered}");
    t.stop().await;
}

#[tokio::test]
async fn a_hanging_attempt_times_out_and_the_hook_keeps_event_order() {
    // The first two requests hang: the first delivery times out twice.
    let (t, alice, receiver, hook) = one_hook(Duration::from_secs(2), 2, 3).await;
    // 2 s timeout, 1 s backoff, 2 s timeout, 2 s backoff, then through.
    let deliveries = all_delivered(&t, &alice, &hook, 3, Duration::from_secs(40)).await;
    let list = deliveries.as_array().expect("list");
    assert_eq!(list[0]["attempts"], 3, "{deliveries}");
    assert!(
        list[1..].iter().all(|d| d["attempts"] == 1),
        "later deliveries waited instead of failing: {deliveries}"
    );
    let (requests, open, most_per_hook) = receiver.snapshot();
    assert_eq!(most_per_hook, 1, "one request at a time");
    assert_eq!(open, 0);
    let order: Vec<u64> = requests.iter().map(|r| r.event_id()).collect();
    assert!(
        order.windows(2).all(|w| w[0] <= w[1]),
        "requests in event order: {order:?}"
    );
    assert_eq!(order[0], order[1], "the hanging delivery is retried first");
    assert_eq!(order[1], order[2]);
    let listed = event_ids(&deliveries);
    let mut taken = order.clone();
    taken.dedup();
    // A delivery listed after the snapshot may have arrived since.
    assert!(
        taken.len() >= listed.len() && taken[..listed.len()] == listed[..],
        "each delivery taken once, in order: {taken:?} vs {listed:?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn queued_deliveries_survive_a_restart_in_order() {
    // The first request hangs until the controller stops.
    let (t, alice, receiver, hook) = one_hook(Duration::from_secs(20), 1, 2).await;
    let seen = receiver.seen.clone();
    within(Duration::from_secs(10), || {
        seen.lock().expect("lock").open_now() == 1
    })
    .await
    .expect("the first delivery hangs");
    let queued = t
        .get(&format!("/v3/hooks/{hook}/deliveries"), &alice)
        .await
        .json();
    assert!(
        queued
            .as_array()
            .is_some_and(|d| d.len() >= 2 && d.iter().all(|d| d["state"] == "pending")),
        "{queued}"
    );

    // Tokens are stored: Alice's still works after the restart.
    let t = t.restart().await;
    let deliveries = all_delivered(&t, &alice, &hook, 2, Duration::from_secs(20)).await;
    let listed = event_ids(&deliveries);
    let (requests, _, most_per_hook) = receiver.snapshot();
    let order: Vec<u64> = requests.iter().map(|r| r.event_id()).collect();
    assert_eq!(
        order[0], order[1],
        "the interrupted delivery goes again first"
    );
    assert_eq!(order[1..order.len().min(listed.len() + 1)], listed[..]);
    assert_eq!(most_per_hook, 1);
    t.stop().await;
}

/// Posts `body` to the receiver as a delivery with the given signature.
async fn post_delivery(
    http: &reqwest::Client,
    url: &str,
    delivery: &str,
    signature: &str,
    body: &[u8],
) -> StatusCode {
    http.post(url)
        .header("Content-Type", "application/json")
        .header("X-Flotilla-Delivery", delivery)
        .header(signature::HEADER, signature)
        .body(body.to_vec())
        .send()
        .await
        .expect("receiver answers")
        .status()
}

#[test]
fn the_readme_shows_the_example_receivers_check() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let script = std::fs::read_to_string(format!("{root}/examples/webhook-receiver.py"))
        .expect("example receiver");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README");
    let start = script.find("def verify").expect("verify in the script");
    let end = start + script[start..].find("\n\n\n").expect("end of verify");
    for line in script[start..end].lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            readme.contains(&format!("  {line}\n")),
            "README shows the script's line {line:?}"
        );
    }
}

#[tokio::test]
async fn the_readme_receiver_checks_signatures_and_refuses_replays() {
    use tokio::io::AsyncBufReadExt;
    let t = TestServer::start().await;
    let (_, _, alice) = t.user("alice").await;
    let secret_file = t.dir.path().join("hook-secret");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/webhook-receiver.py"
    );
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .args(["--port", "0", "--secret-file"])
        .arg(&secret_file)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs the example receiver");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the receiver starts")
        .expect("read")
        .expect("a line");
    let port = first.strip_prefix("listening on ").expect("port line");
    let url = format!("http://127.0.0.1:{port}/");
    let (hook, secret) = subscribe(&t, &alice, &url).await;
    std::fs::write(&secret_file, &secret).expect("secret file");

    // A real delivery is taken.
    t.apply(&alice, &reference_v1()).await;
    let deliveries = all_delivered(&t, &alice, &hook, 1, Duration::from_secs(20)).await;
    let taken = deliveries[0]["id"].as_str().expect("id").to_owned();
    let printed = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("the receiver prints the event")
        .expect("read")
        .expect("a line");
    let printed: Value = serde_json::from_str(&printed).expect("json line");
    assert_eq!(printed["delivery"], taken.as_str());

    let http = reqwest::Client::new();
    let body = br#"{"type":"stack.created"}"#;
    let now = unix_now();
    let fresh = signature::sign(&secret, now, body);
    // Times well clear of the 5-minute edge: the receiver's clock reads
    // later than `now`, by however long a loaded machine takes.
    let cases = [
        // (delivery id, signature, expected answer)
        ("wh-x/1", fresh.clone(), StatusCode::NO_CONTENT),
        ("wh-x/1", fresh.clone(), StatusCode::CONFLICT),
        (taken.as_str(), fresh.clone(), StatusCode::CONFLICT),
        (
            "wh-x/2",
            signature::sign(&secret, now - 400, body),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wh-x/3",
            signature::sign(&secret, now + 400, body),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wh-x/4",
            signature::sign("not the secret", now, body),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wh-x/5",
            format!("sha256={}", &fresh[fresh.len() - 64..]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wh-x/6",
            signature::sign(&secret, now - 200, body),
            StatusCode::NO_CONTENT,
        ),
    ];
    for (delivery, signature, expected) in cases {
        let status = post_delivery(&http, &url, delivery, &signature, body).await;
        assert_eq!(status, expected, "{delivery} signed {signature}");
    }
    t.stop().await;
}
