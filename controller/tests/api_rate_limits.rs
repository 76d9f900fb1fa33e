//! Rate limits (the reference's `X-RateLimit-*` headers, 429 with
//! `Retry-After`) per caller and per address, and the lockout of failed
//! secrets per (client id, address).

mod support;

use flotilla_controller::api::limits::Rate;
use flotilla_controller::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{Reply, TestServer};

async fn start(tune: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = support::config_for(dir.path());
    tune(&mut config);
    TestServer::start_with(dir, config).await
}

fn rate(per_second: u32, burst: u32) -> Rate {
    Rate { per_second, burst }
}

fn number(reply: &Reply, name: &str) -> u64 {
    reply
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} on a {}: {:?}", reply.status, reply.headers))
        .to_str()
        .expect("ascii")
        .parse()
        .unwrap_or_else(|err| panic!("{name} is not a number: {err}"))
}

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A client whose connections come from `ip` (a loopback address).
fn client_from(ip: &str) -> reqwest::Client {
    let ip: IpAddr = ip.parse().expect("ip");
    reqwest::Client::builder()
        .local_address(ip)
        .build()
        .expect("client")
}

fn credentials(client_id: &str, secret: &str) -> Value {
    json!({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
}

async fn token_request(t: &TestServer, http: &reqwest::Client, body: &Value) -> Reply {
    t.raw(http.post(t.url("/v3/access_token")).json(body)).await
}

/// `times` token requests with `body`, each refused as bad credentials.
async fn refused_secrets(t: &TestServer, http: &reqwest::Client, body: &Value, times: usize) {
    for _ in 0..times {
        let reply = token_request(t, http, body).await;
        assert_eq!(reply.error(401), "invalid_client");
    }
}

#[tokio::test]
async fn every_answer_carries_the_rate_limit_headers() {
    let t = start(|_| {}).await;
    let token = t.admin_token().await;
    let before = epoch_secs();
    let replies = [
        (t.get("/v3/alm/stack", &token).await, 200),
        (t.get("/v3/alm/stack", "not-a-token").await, 401),
        (t.get("/v3/no/such/route", &token).await, 404),
        (t.send(Method::GET, "/healthz", None, None).await, 200),
    ];
    for (reply, status) in &replies {
        assert_eq!(reply.status.as_u16(), *status, "{}", reply.text);
        assert_eq!(number(reply, "x-ratelimit-limit"), 200, "the default burst");
        assert!(number(reply, "x-ratelimit-remaining") < 200);
        let reset = number(reply, "x-ratelimit-reset");
        assert!(
            reset >= before && reset <= epoch_secs() + 60,
            "Reset is the Unix time the burst is whole again: {reset}"
        );
    }
    t.stop().await;
}

#[tokio::test]
async fn past_the_limit_a_429_with_retry_after_in_the_error_shape() {
    let t = start(|c| c.http.caller_rate = rate(1, 3)).await;
    let token = t.admin_token().await;
    let mut served = Vec::new();
    let reply = loop {
        let reply = t.get("/v3/alm/stack", &token).await;
        if reply.status != StatusCode::OK || served.len() == 10 {
            break reply;
        }
        served.push(number(&reply, "x-ratelimit-remaining"));
    };
    // The burst, and at most a request or two the bucket regained meanwhile.
    assert!((3..=5).contains(&served.len()), "{served:?}");
    assert_eq!(served[..3], [2, 1, 0]);
    assert_eq!(reply.error(429), "rate_limited");
    assert_eq!(number(&reply, "x-ratelimit-limit"), 3);
    assert_eq!(number(&reply, "x-ratelimit-remaining"), 0);
    let retry = number(&reply, "retry-after");
    assert!(
        (1..=2).contains(&retry),
        "about one request's worth: {retry}"
    );
    assert_eq!(reply.json()["errors"][0]["context"]["retry_after"], retry);
    assert!(number(&reply, "x-ratelimit-reset") >= epoch_secs());
    // After the wait, the caller is served again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let reply = t.get("/v3/alm/stack", &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let metrics = t.send(Method::GET, "/metrics", None, None).await.text;
    assert!(
        metrics.contains("flotilla_http_rate_limited_total{scope=\"caller\"} 1"),
        "{metrics}"
    );
    t.stop().await;
}

#[tokio::test]
async fn one_clients_flood_does_not_limit_another() {
    let t = start(|c| c.http.caller_rate = rate(1, 5)).await;
    let (_, _, user) = t.user("alice").await;
    let admin = t.admin_token().await;
    let mut refused = 0;
    for _ in 0..20 {
        if t.get("/v3/alm/stack", &admin).await.status == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
    }
    // Five at once, and one more per second the flood lasts.
    assert!(
        refused >= 10,
        "the admin's flood is limited: {refused} refused"
    );
    let reply = t.get("/v3/alm/stack", &user).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(number(&reply, "x-ratelimit-remaining") >= 3);
    t.stop().await;
}

#[tokio::test]
async fn token_requests_and_anonymous_calls_count_per_address() {
    let t = start(|c| c.http.address_rate = rate(1, 4)).await;
    let here = client_from("127.0.0.1");
    let wrong = credentials(&t.admin.client_id, "wrong-secret");
    refused_secrets(&t, &here, &wrong, 2).await;
    let health = t.raw(here.get(t.url("/healthz"))).await;
    assert_eq!(health.status, StatusCode::OK);
    // A bad token is no caller: it counts against the address.
    let bad = t
        .raw(here.get(t.url("/v3/alm/stack")).bearer_auth("nope"))
        .await;
    assert_eq!(bad.error(401), "unauthorized");
    let reply = t.raw(here.get(t.url("/healthz"))).await;
    assert_eq!(reply.error(429), "rate_limited");
    assert!(number(&reply, "retry-after") >= 1);
    // Another address is untouched, and so is a caller with a valid token.
    let there = client_from("127.0.0.2");
    let right = credentials(&t.admin.client_id, &t.admin.client_secret);
    let reply = token_request(&t, &there, &right).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let token = reply.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let reply = t
        .raw(here.get(t.url("/v3/alm/stack")).bearer_auth(&token))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    t.stop().await;
}

#[tokio::test]
async fn failed_secrets_lock_out_their_address_only() {
    let t = start(|c| {
        c.http.lockout.lock_after = 3;
        c.http.lockout.lock_for = Duration::from_secs(120);
    })
    .await;
    let attacker = client_from("127.0.0.1");
    let wrong = credentials(&t.admin.client_id, "wrong-secret");
    let right = credentials(&t.admin.client_id, &t.admin.client_secret);
    refused_secrets(&t, &attacker, &wrong, 3).await;
    // Locked: even the right secret is not looked at from this address.
    for body in [&wrong, &right] {
        let reply = token_request(&t, &attacker, body).await;
        assert_eq!(reply.error(429), "too_many_attempts");
        let retry = number(&reply, "retry-after");
        assert!(
            (100..=120).contains(&retry),
            "the lock's remainder: {retry}"
        );
        let context = &reply.json()["errors"][0]["context"];
        assert_eq!(context["locked"], true);
        assert_eq!(context["retry_after"], retry);
        assert!(
            !reply.text.contains("wrong-secret") && !reply.text.contains(&t.admin.client_secret),
            "{}",
            reply.text
        );
    }
    // The admin, from elsewhere, still gets a token.
    let admin = client_from("127.0.0.2");
    let reply = token_request(&t, &admin, &right).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    // Another client id from the locked address is not locked either.
    let reply = token_request(&t, &attacker, &credentials("someone-else", "x")).await;
    assert_eq!(reply.error(401), "invalid_client");
    let metrics = t.send(Method::GET, "/metrics", None, None).await.text;
    assert!(
        metrics.contains("flotilla_secret_lockouts_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flotilla_secret_tries_refused_total{outcome=\"locked\"} 2"),
        "{metrics}"
    );
    t.stop().await;
}

#[tokio::test]
async fn failed_secrets_are_slowed_before_the_lock() {
    let t = start(|c| {
        c.http.lockout.lock_after = 10;
        c.http.lockout.first_delay = Duration::from_secs(3);
    })
    .await;
    let from = client_from("127.0.0.1");
    let wrong = credentials(&t.admin.client_id, "wrong-secret");
    refused_secrets(&t, &from, &wrong, 3).await;
    let reply = token_request(&t, &from, &wrong).await;
    assert_eq!(reply.error(429), "too_many_attempts");
    let retry = number(&reply, "retry-after");
    assert!((1..=3).contains(&retry), "the first wait: {retry}");
    assert_eq!(reply.json()["errors"][0]["context"]["locked"], false);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    // After the wait the secret is checked again; the right one clears the pair.
    let right = credentials(&t.admin.client_id, &t.admin.client_secret);
    let reply = token_request(&t, &from, &right).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    refused_secrets(&t, &from, &wrong, 3).await;
    t.stop().await;
}
