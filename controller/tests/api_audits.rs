//! The audit trail: every operator action is recorded with who did it
//! (`username`, `client_id`), when and what changed (config: keys, never
//! values); `GET /v3/audits` lists them (admins all, users their own
//! stacks'), filters by stack, user, action and `since`, and each is an
//! `audit` event too. Instance actions and drains need a real agent; the
//! operator CLI test covers those.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::TestServer;

fn template(value: &str) -> Value {
    json!({"version": "1", "configurations": [
        {"role": "web", "flag": "Web01", "provision": {"instance_count": 0},
         "container": {"image": "web", "environment_variables": {"A": value},
                       "secret_variables": ["API_KEY"]}}
    ]})
}

async fn audits(t: &TestServer, token: &str, query: &str) -> Vec<Value> {
    let reply = t.get(&format!("/v3/audits{query}"), token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json().as_array().expect("entries").clone()
}

fn actions(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect()
}

async fn send(
    t: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Value {
    let reply = t.send(method, path, Some(token), body.as_ref()).await;
    assert!(reply.status.is_success(), "{path}: {}", reply.text);
    reply.json()
}

#[tokio::test]
async fn every_operator_action_is_audited_with_who_and_what() {
    let t = TestServer::start().await;
    let admin = t.admin_token().await;
    let (alice_client, _, alice) = t.user("alice").await;
    let (_, _, bob) = t.user("bob").await;

    // Alice's stack, through every stack operation.
    let (stack, _) = t.apply(&alice, &template("one")).await;
    let path = format!("/v3/alm/template/{stack}");
    send(&t, Method::PUT, &path, &alice, Some(template("two"))).await;
    let path = format!("/v3/alm/stack/{stack}/formation");
    let scale = json!([{"flag": "Web01", "instance_count": 0}]);
    send(&t, Method::PATCH, &path, &alice, Some(scale)).await;
    let path = format!("/v3/alm/stack/{stack}/config/Web01");
    let config = json!({"API_KEY": "s3cr3t-value", "B": "plain-b", "A": null});
    send(&t, Method::PATCH, &path, &alice, Some(config)).await;
    let path = format!("/v3/alm/template/{stack}/rollback");
    send(&t, Method::POST, &path, &alice, Some(json!({}))).await;
    let hook = send(
        &t,
        Method::POST,
        "/v3/hooks",
        &alice,
        Some(
            json!({"url": "http://user:pw@127.0.0.1:9/h", "events": ["audit"], "stack_id": stack}),
        ),
    )
    .await;
    let hook_id = hook["id"].as_str().expect("id").to_owned();
    send(
        &t,
        Method::DELETE,
        &format!("/v3/hooks/{hook_id}"),
        &alice,
        None,
    )
    .await;
    let path = format!("/v3/alm/stack/{stack}");
    send(&t, Method::DELETE, &path, &alice, None).await;

    let mine = audits(&t, &alice, "").await;
    assert_eq!(
        actions(&mine),
        [
            "stack.apply",
            "stack.update",
            "stack.formation",
            "stack.config",
            "stack.rollback",
            "hook.create",
            "hook.remove",
            "stack.delete",
        ]
    );
    for entry in &mine {
        assert_eq!(entry["username"], "alice", "{entry}");
        assert_eq!(entry["client_id"], alice_client.as_str(), "{entry}");
        assert_eq!(entry["stack_id"], stack.as_str(), "{entry}");
        assert!(
            entry["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{entry}"
        );
        assert!(entry["id"].is_u64(), "{entry}");
    }
    let config = &mine[3];
    assert_eq!(config["target"], stack.as_str());
    assert_eq!(config["changes"]["flag"], "Web01");
    assert_eq!(config["changes"]["set"], json!(["API_KEY", "B"]));
    assert_eq!(config["changes"]["unset"], json!(["A"]));
    assert_eq!(
        mine[2]["changes"]["formation"],
        json!([{"flag": "Web01", "instance_count": 0}])
    );
    assert_eq!(mine[5]["changes"]["url"], "http://127.0.0.1:9/h");
    // No value and no credential anywhere in the trail or the event log.
    for path in ["/v3/audits", "/v3/events"] {
        let text = t.get(path, &alice).await.text;
        for secret in ["s3cr3t-value", "plain-b", "pw@"] {
            assert!(!text.contains(secret), "{path} shows {secret}");
        }
    }

    // They are events too.
    let events = t.get("/v3/events?type=audit", &alice).await.json();
    assert_eq!(events.as_array().map(Vec::len), Some(mine.len()));
    assert_eq!(events[0]["data"]["action"], "stack.apply");

    // Admin actions on shared things: only admins see them.
    let client = send(
        &t,
        Method::POST,
        "/v3/admin/clients",
        &admin,
        Some(json!({"username": "carol"})),
    )
    .await;
    let carol = client["client_id"].as_str().expect("id").to_owned();
    send(
        &t,
        Method::DELETE,
        &format!("/v3/admin/clients/{carol}"),
        &admin,
        None,
    )
    .await;
    send(
        &t,
        Method::POST,
        "/v3/alm/pools",
        &admin,
        Some(json!({"name": "gpu", "users": ["alice"]})),
    )
    .await;
    send(
        &t,
        Method::PUT,
        "/v3/alm/pools/gpu",
        &admin,
        Some(json!({"users": ["bob"]})),
    )
    .await;
    send(&t, Method::DELETE, "/v3/alm/pools/gpu", &admin, None).await;
    let token = send(
        &t,
        Method::POST,
        "/v3/alm/agent/join-token",
        &admin,
        Some(json!({})),
    )
    .await;
    let token_id = token["id"].as_str().expect("id").to_owned();
    send(
        &t,
        Method::DELETE,
        &format!("/v3/alm/agent/join-token/{token_id}"),
        &admin,
        None,
    )
    .await;

    let all = audits(&t, &admin, "").await;
    // Before Alice's: the test's own set-up (clients, the default pool).
    let start = all.len() - 7;
    assert_eq!(
        actions(&all)[start..],
        [
            "client.create",
            "client.revoke",
            "pool.create",
            "pool.update",
            "pool.delete",
            "join_token.create",
            "join_token.revoke",
        ]
    );
    let created = &all[start];
    assert_eq!(created["target"], carol.as_str());
    assert_eq!(created["username"], "admin");
    assert!(!t
        .get("/v3/audits", &admin)
        .await
        .text
        .contains(client["client_secret"].as_str().expect("secret")));
    let update = &all[start + 3];
    assert_eq!(update["changes"]["users_added"], json!(["bob"]));
    assert_eq!(update["changes"]["users_removed"], json!(["alice"]));
    assert!(!t
        .get("/v3/audits", &admin)
        .await
        .text
        .contains(token["token"].as_str().expect("token")));
    assert_eq!(
        audits(&t, &alice, "").await.len(),
        mine.len(),
        "users see their own stacks' only"
    );

    // Filters.
    assert_eq!(
        actions(&audits(&t, &admin, "?user=admin&action=pool.update").await),
        ["pool.update"; 3],
        "the default pool for alice and bob, then gpu"
    );
    assert_eq!(audits(&t, &admin, "?user=alice").await.len(), mine.len());
    assert_eq!(
        audits(&t, &admin, &format!("?stack_id={stack}"))
            .await
            .len(),
        mine.len()
    );
    let since = mine[5]["id"].as_u64().expect("id");
    assert_eq!(
        actions(&audits(&t, &alice, &format!("?since={since}")).await),
        ["hook.remove", "stack.delete"]
    );
    let page = t.get("/v3/audits?limit=2&offset=1", &alice).await;
    assert_eq!(
        page.headers["x-total-count"],
        mine.len().to_string().as_str()
    );
    assert_eq!(
        actions(page.json().as_array().expect("page")),
        ["stack.update", "stack.formation"]
    );

    // Bob sees nothing of Alice's, whatever he asks.
    for query in ["", "?user=alice", &format!("?stack_id={stack}")] {
        assert_eq!(
            audits(&t, &bob, query).await,
            Vec::<Value>::new(),
            "{query}"
        );
    }
    t.stop().await;
}

#[tokio::test]
async fn bad_queries_and_stack_tokens_are_refused() {
    let t = TestServer::start().await;
    let (_, _, alice) = t.user("alice").await;
    let (stack, _) = t.apply(&alice, &template("one")).await;
    for (query, code) in [
        ("?action=stack.nope", "invalid_query"),
        ("?since=9223372036854775808", "invalid_query"),
        ("?since=-1", "invalid_query"),
        ("?limit=0", "invalid_query"),
    ] {
        let reply = t.get(&format!("/v3/audits{query}"), &alice).await;
        assert_eq!(reply.error(400), code, "{query}: {}", reply.text);
    }
    let described = t
        .get(&format!("/v3/alm/stack/{stack}"), &alice)
        .await
        .json();
    let auth_token = described["auth_token"].as_str().expect("auth_token");
    let stack_token = t.token_for(&stack, auth_token).await;
    assert_eq!(
        t.get("/v3/audits", &stack_token).await.error(403),
        "forbidden"
    );
    assert_eq!(
        t.get("/v3/audits", "not-a-token").await.error(401),
        "unauthorized"
    );
    t.stop().await;
}
