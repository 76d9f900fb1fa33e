//! Webhooks: a receiver in the test gets signed deliveries, retried after
//! failures, only for the subscriber's stacks and chosen types.

mod support;

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{reference_v1, TestServer};

/// What the receiver saw: (delivery id, event type, signature, body).
type Seen = Arc<Mutex<Vec<(String, String, String, Vec<u8>)>>>;

/// A receiver that fails the first `failures` requests with 500.
async fn receiver(failures: usize) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let mut log = log.lock().expect("lock");
                log.push((
                    header("x-flotilla-delivery"),
                    header("x-flotilla-event"),
                    header("x-flotilla-signature-256"),
                    body.to_vec(),
                ));
                if log.len() <= failures {
                    AxumStatus::INTERNAL_SERVER_ERROR
                } else {
                    AxumStatus::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

/// Checks a `t=<secs>,v1=<hex>` header by hand: the HMAC-SHA256 of
/// `<t>.<body>`, signed within a minute of now.
fn assert_signed(secret: &str, header: &str, body: &[u8]) {
    let (t, v1) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .unwrap_or_else(|| panic!("not t=...,v1=...: {header}"));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    assert_eq!(v1, hex::encode(mac.finalize().into_bytes()), "{header}");
    let t: u64 = t.parse().expect("unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(now.abs_diff(t) < 60, "signed at {t}, now {now}");
    // The crate's own check agrees.
    let checked = flotilla_controller::hooks::signature::verify(
        header,
        secret,
        body,
        now,
        Duration::from_secs(300),
    );
    assert_eq!(checked, Ok(t));
}

#[tokio::test]
async fn deliveries_are_signed_retried_and_listed() {
    let t = TestServer::start().await;
    let (_, _, alice) = t.user("alice").await;
    let (_, _, bob) = t.user("bob").await;
    let (url, seen) = receiver(2).await;
    let reply = t
        .send(
            Method::POST,
            "/v3/hooks",
            Some(&alice),
            Some(&json!({"url": url, "events": ["stack.created"]})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let hook = reply.json();
    let (hook_id, secret) = (
        hook["id"].as_str().expect("id").to_owned(),
        hook["secret"].as_str().expect("secret").to_owned(),
    );

    t.apply(&bob, &reference_v1()).await; // not Alice's: never delivered
    let (stack, _) = t.apply(&alice, &reference_v1()).await;
    // Two failures, then taken: 1 s and 2 s of backoff.
    let deliveries_path = format!("/v3/hooks/{hook_id}/deliveries");
    let mut deliveries = Value::Null;
    for _ in 0..150 {
        deliveries = t.get(&deliveries_path, &alice).await.json();
        if deliveries[0]["state"] == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(deliveries.as_array().map(Vec::len), Some(1), "{deliveries}");
    let delivery = &deliveries[0];
    assert_eq!(delivery["state"], "delivered", "{delivery}");
    assert_eq!(delivery["attempts"], 3);
    assert_eq!(delivery["last_status"], 204);
    assert_eq!(delivery["event_type"], "stack.created");

    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3, "two failures and the success");
    for (id, kind, signature, body) in &seen {
        assert_eq!(
            id,
            delivery["id"].as_str().expect("id"),
            "same id on retries"
        );
        assert_eq!(kind, "stack.created");
        assert_signed(&secret, signature, body);
        let event: Value = serde_json::from_slice(body).expect("json");
        assert_eq!(event["stack_id"], stack.as_str());
        assert_eq!(event["type"], "stack.created");
    }

    // Listing never shows the secret; others cannot see or remove it.
    let listed = t.get("/v3/hooks", &alice).await.json();
    assert_eq!(listed[0]["id"], hook_id.as_str());
    assert!(listed[0].get("secret").is_none(), "{listed}");
    assert_eq!(t.get("/v3/hooks", &bob).await.json(), json!([]));
    let reply = t
        .send(
            Method::DELETE,
            &format!("/v3/hooks/{hook_id}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(reply.error(404), "not_found");
    let reply = t
        .send(
            Method::DELETE,
            &format!("/v3/hooks/{hook_id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        t.get(&deliveries_path, &alice).await.error(404),
        "not_found"
    );
    t.stop().await;
}

#[tokio::test]
async fn bad_subscriptions_are_refused() {
    let t = TestServer::start().await;
    let (_, _, token) = t.user("carol").await;
    for (body, path) in [
        (json!({"url": "ftp://example.com/x"}), "url"),
        (json!({"url": "http://"}), "url"),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": ["Not A Type"]}),
            "events/0",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "stack_id": "mo-nope"}),
            "stack_id",
        ),
    ] {
        let reply = t
            .send(Method::POST, "/v3/hooks", Some(&token), Some(&body))
            .await;
        assert!(
            reply.status == StatusCode::BAD_REQUEST || reply.status == StatusCode::NOT_FOUND,
            "{body}: {}",
            reply.text
        );
        assert!(reply.text.contains(path), "{path} named in {}", reply.text);
    }
    let reply = t
        .send(
            Method::POST,
            "/v3/hooks",
            Some(&token),
            Some(&json!({"url": "http://127.0.0.1:9/x", "secret": "mine"})),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "unknown fields refused"
    );
    assert_eq!(
        t.get("/v3/hooks", &token).await.json(),
        json!([]),
        "nothing stored"
    );
    t.stop().await;
}

#[tokio::test]
async fn hooks_cannot_be_turned_inward() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = support::config_for(dir.path());
    config.webhook_allow_private = false;
    let t = TestServer::start_with(dir, config).await;
    let admin = t.admin_token().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:22/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://localhost:8080/",
        "http://0.0.0.0/",
    ] {
        let reply = t.post("/v3/hooks", &admin, &json!({"url": url})).await;
        assert_eq!(reply.error(403), "webhook_target_refused", "{url}");
        assert!(
            !reply.text.contains("connect"),
            "says nothing of the target: {}",
            reply.text
        );
    }
    assert_eq!(t.get("/v3/hooks", &admin).await.json(), json!([]));
    t.stop().await;

    // With private receivers allowed, a loopback hook is taken; link-local
    // never is.
    let t = TestServer::start().await;
    let admin = t.admin_token().await;
    let reply = t
        .post(
            "/v3/hooks",
            &admin,
            &json!({"url": "http://169.254.169.254/x"}),
        )
        .await;
    assert_eq!(reply.error(403), "webhook_target_refused");
    let (url, seen) = receiver(0).await;
    let reply = t.post("/v3/hooks", &admin, &json!({"url": url})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let hook = reply.json()["id"].as_str().expect("id").to_owned();

    // The same controller restarted without the flag: the stored hook's
    // deliveries are refused at delivery time, and say only "refused".
    let mut t = t;
    let mut config = t.config.clone();
    config.webhook_allow_private = false;
    if let Some(server) = t.server.take() {
        server.stop().await.expect("clean stop");
    }
    let data = std::mem::replace(&mut t.dir, tempfile::tempdir().expect("tempdir"));
    let t = TestServer::start_with(data, config).await;
    let admin = t.admin_token().await;
    t.apply(&admin, &reference_v1()).await;
    let path = format!("/v3/hooks/{hook}/deliveries");
    let mut deliveries = Value::Null;
    for _ in 0..100 {
        deliveries = t.get(&path, &admin).await.json();
        if deliveries
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["last_error"] == "refused"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = &deliveries[0];
    assert_eq!(first["last_error"], "refused", "{deliveries}");
    assert_eq!(first["state"], "failed", "{deliveries}");
    assert!(
        seen.lock().expect("lock").is_empty(),
        "nothing reached the receiver"
    );
    t.stop().await;
}

#[tokio::test]
async fn audit_entries_reach_webhooks_like_every_event() {
    let t = TestServer::start().await;
    let (_, _, alice) = t.user("alice").await;
    let (url, seen) = receiver(0).await;
    let reply = t
        .post(
            "/v3/hooks",
            &alice,
            &json!({"url": url, "events": ["audit"]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let (stack, _) = t.apply(&alice, &reference_v1()).await;
    let mut delivered = Vec::new();
    for _ in 0..100 {
        delivered = seen.lock().expect("lock").clone();
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered.len(), 1, "only the apply's entry: {delivered:?}");
    let (_, kind, _, body) = &delivered[0];
    assert_eq!(kind, "audit");
    let event: Value = serde_json::from_slice(body).expect("json");
    assert_eq!(event["data"]["action"], "stack.apply", "{event}");
    assert_eq!(event["data"]["username"], "alice");
    assert_eq!(event["stack_id"], stack.as_str());
    t.stop().await;
}
