//! Credentials that reach only what they must, over the REST API: stack
//! tokens cannot forge statuses for instances they do not run, the
//! original alm-agent's ids are bounded by the instance count, URL
//! credentials never reach statuses or events, and revoking a client ends
//! its event streams and disables its webhooks.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::TestServer;

fn template(count: u64) -> Value {
    json!({
        "version": "2017-03-03",
        "configurations": [{
            "role": "web", "flag": "Web01",
            "provision": {"instance_count": count},
            "container": {"image": "registry.example/web:1"}
        }]
    })
}

async fn auth_token(t: &TestServer, token: &str, stack: &str) -> String {
    t.get(&format!("/v3/alm/stack/{stack}"), token).await.json()["auth_token"]
        .as_str()
        .expect("auth_token")
        .to_owned()
}

async fn containers(t: &TestServer, token: &str, stack: &str) -> Vec<Value> {
    t.get(&format!("/v3/alm/stack/{stack}/containers"), token)
        .await
        .json()
        .as_array()
        .cloned()
        .expect("containers")
}

async fn events(t: &TestServer, token: &str, query: &str) -> Vec<Value> {
    t.get(&format!("/v3/events?{query}"), token)
        .await
        .json()
        .as_array()
        .cloned()
        .expect("events")
}

#[tokio::test]
async fn a_stack_token_cannot_forge_statuses_for_made_up_instances() {
    let t = TestServer::start().await;
    let admin = t.admin_token().await;
    let (stack, _) = t.apply(&admin, &template(2)).await;
    let auth = auth_token(&t, &admin, &stack).await;
    // The scheduler's own write (why the stack waits) comes first.
    support::wait_reason(&t, &admin, &stack).await;
    let store_before = t.get("/v3/events", &admin).await.json();
    for i in 0..50 {
        let reply = t
            .post(
                "/v3/event/container/status",
                &auth,
                &json!({"stack_id": stack, "instance_id": format!("i-fake-{i}"), "status": "running", "flag": "Web01"}),
            )
            .await;
        assert_eq!(reply.error(404), "not_found");
    }
    assert!(containers(&t, &admin, &stack).await.is_empty());
    assert!(events(&t, &admin, "type=container.status").await.is_empty());
    // Only an agent's own token may leave the stack out of a notice.
    let reply = t
        .post(
            "/v3/event/spot/shutdown",
            &auth,
            &json!({"instance_id": "i-1"}),
        )
        .await;
    assert_eq!(reply.error(403), "forbidden");
    assert_eq!(t.get("/v3/events", &admin).await.json(), store_before);
    t.stop().await;
}

#[tokio::test]
async fn alm_agent_ids_are_bounded_by_the_instance_count() {
    let t = TestServer::start().await;
    let admin = t.admin_token().await;
    let (stack, _) = t.apply(&admin, &template(1)).await;
    let auth = auth_token(&t, &admin, &stack).await;
    let post = |path: &'static str, instance: &'static str, agent: &'static str| {
        let request = t.http.post(t.url(path)).bearer_auth(&auth).form(&[
            ("stack_id", stack.as_str()),
            ("instance_id", instance),
            ("agent_id", agent),
            ("status", "running"),
        ]);
        t.raw(request)
    };
    let first = post("/v3/alm/agent/container_status", "i-vm-1", "alm-1").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let again = post("/v3/alm/agent/agent_status", "i-vm-1", "alm-1").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    // One more distinct id than instance_count: refused, nothing stored.
    for path in [
        "/v3/alm/agent/container_status",
        "/v3/alm/agent/agent_status",
    ] {
        let reply = post(path, "i-vm-2", "alm-2").await;
        assert_eq!(reply.error(409), "instance_limit", "{path}");
        let reply = post(path, "", "alm-3").await;
        assert_eq!(reply.error(409), "instance_limit", "{path} by agent_id");
    }
    let rows = containers(&t, &admin, &stack).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["instance_id"], "i-vm-1");
    assert!(events(&t, &admin, "instance_id=i-vm-2").await.is_empty());
    assert!(events(&t, &admin, "instance_id=alm-3").await.is_empty());

    // With instance_count 0 no alm-agent id is taken at all.
    let (empty, _) = t.apply(&admin, &template(0)).await;
    let auth = auth_token(&t, &admin, &empty).await;
    let reply = t
        .raw(
            t.http
                .post(t.url("/v3/alm/agent/container_status"))
                .bearer_auth(&auth)
                .form(&[
                    ("stack_id", empty.as_str()),
                    ("instance_id", "i-vm-1"),
                    ("status", "running"),
                ]),
        )
        .await;
    assert_eq!(reply.error(409), "instance_limit");
    assert!(containers(&t, &admin, &empty).await.is_empty());
    t.stop().await;
}

#[tokio::test]
async fn credentials_in_urls_never_reach_statuses_or_events() {
    let t = TestServer::start().await;
    let admin = t.admin_token().await;
    let (stack, _) = t.apply(&admin, &template(0)).await;
    let reason = "git fetch https://deploy:hunter2@git.example/shop.git failed; mirror ssh://git:s3cret@m.example/x";
    let reply = t
        .post(
            "/v3/event/container/status",
            &admin,
            &json!({"stack_id": stack, "instance_id": "i-1", "status": "start-failure", "reason": reason}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let rows = containers(&t, &admin, &stack).await;
    assert_eq!(
        rows[0]["reason"],
        "git fetch https://git.example/shop.git failed; mirror ssh://m.example/x"
    );
    let all = t.get("/v3/events", &admin).await.text;
    assert!(all.contains("https://git.example/shop.git"), "{all}");
    for secret in ["hunter2", "s3cret", "deploy:"] {
        assert!(!all.contains(secret), "{secret} in {all}");
        assert!(!rows[0].to_string().contains(secret));
    }
    t.stop().await;
}

/// A webhook receiver counting what it gets.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let log = log.clone();
            async move {
                log.lock().expect("lock").push(body);
                axum::http::StatusCode::NO_CONTENT
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

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn revoking_a_client_ends_its_streams_and_disables_its_hooks() {
    let t = TestServer::start().await;
    let admin = t.admin_token().await;
    let (client_id, _, alice) = t.user("alice").await;
    let (url, seen) = receiver().await;
    let hook = t
        .post(
            "/v3/hooks",
            &alice,
            &json!({"url": url, "events": ["stack.created"]}),
        )
        .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{}", hook.text);
    let hook_id = hook.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(hook.json()["status"], "active");
    let (_first, _) = t.apply(&alice, &template(0)).await;
    wait_until("the first event is delivered", || {
        seen.lock().expect("lock").len() == 1
    })
    .await;

    let mut stream = t
        .http
        .get(t.url("/v3/events?follow=true"))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), StatusCode::OK);
    let revoked = t
        .send(
            Method::DELETE,
            &format!("/v3/admin/clients/{client_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text);
    let revoked_at = Instant::now();
    // The stream ends (no heartbeat keeps it open) within 5 s.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream was still open 5 s after the revocation"
    );
    assert!(revoked_at.elapsed() < Duration::from_secs(5));

    // The hook lists as disabled and delivers nothing more.
    let hooks = t.get("/v3/hooks", &admin).await.json();
    let listed = hooks
        .as_array()
        .and_then(|h| h.iter().find(|h| h["id"] == hook_id.as_str()).cloned())
        .expect("listed");
    assert_eq!(listed["status"], "disabled", "{listed}");
    // Alice's other client still works; her new stack's event would match
    // the hook, but the hook's own client is revoked.
    let (_, _, alice_again) = t.user("alice").await;
    let (_second, _) = t.apply(&alice_again, &template(0)).await;
    let created = events(&t, &admin, "type=stack.created").await;
    assert_eq!(created.len(), 2, "{created:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        seen.lock().expect("lock").len(),
        1,
        "nothing delivered after the revocation"
    );
    t.stop().await;
}
