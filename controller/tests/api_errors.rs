//! Bad input on every endpoint gets the one error shape with the right
//! status, and stores nothing.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{reference_v1, TestServer};

/// Every route that takes a body: (method, path).
fn body_routes(id: &str) -> Vec<(Method, String)> {
    vec![
        (Method::POST, "/v3/access_token".into()),
        (Method::POST, "/v3/alm/template".into()),
        (Method::PUT, format!("/v3/alm/template/{id}")),
        (Method::POST, "/v3/alm/template/compare".into()),
        (Method::POST, "/v3/event/spot/shutdown".into()),
        (Method::POST, "/v3/event/container/status".into()),
        (Method::POST, "/v3/admin/clients".into()),
        (Method::POST, "/v3/alm/agent/join-token".into()),
        (Method::POST, "/v3/alm/agent/agent_status".into()),
        (Method::POST, "/v3/alm/agent/container_status".into()),
        (Method::POST, "/v3/alm/pools".into()),
        (Method::PUT, "/v3/alm/pools/default".into()),
    ]
}

/// Every route that needs a token: (method, path).
fn authed_routes(id: &str) -> Vec<(Method, String)> {
    vec![
        (Method::DELETE, "/v3/access_token".into()),
        (Method::POST, "/v3/alm/template".into()),
        (Method::GET, format!("/v3/alm/template?template_id={id}")),
        (Method::PUT, format!("/v3/alm/template/{id}")),
        (Method::GET, format!("/v3/alm/template/{id}")),
        (Method::POST, "/v3/alm/template/compare".into()),
        (
            Method::GET,
            format!("/v3/alm/template/{id}/container?flag=Web01"),
        ),
        (Method::GET, "/v3/alm/stack".into()),
        (Method::POST, "/v3/alm/stack".into()),
        (Method::GET, format!("/v3/alm/stack/{id}")),
        (Method::POST, format!("/v3/alm/stack/{id}")),
        (Method::DELETE, format!("/v3/alm/stack/{id}")),
        (Method::GET, format!("/v3/alm/stack/{id}/containers")),
        (Method::POST, "/v3/event/spot/shutdown".into()),
        (Method::POST, "/v3/event/container/status".into()),
        (Method::GET, "/v3/events".into()),
        (Method::GET, "/v3/admin/clients".into()),
        (Method::POST, "/v3/admin/clients".into()),
        (Method::DELETE, "/v3/admin/clients/fc-x".into()),
        (Method::POST, "/v3/alm/agent/join-token".into()),
        (Method::GET, "/v3/alm/agent/join-token".into()),
        (Method::DELETE, "/v3/alm/agent/join-token/jt-x".into()),
        (Method::GET, "/v3/alm/agents".into()),
        (Method::GET, "/v3/alm/agents/ag-x".into()),
        (
            Method::POST,
            format!("/v3/alm/stack/{id}/instances/i-1/restart"),
        ),
        (
            Method::GET,
            format!("/v3/alm/stack/{id}/instances/i-1/logs"),
        ),
        (
            Method::GET,
            format!("/v3/alm/agent/config?stack_id={id}&flag=Web01"),
        ),
        (Method::POST, "/v3/alm/agent/agent_status".into()),
        (Method::POST, "/v3/alm/agent/container_status".into()),
        (
            Method::GET,
            format!("/v3/alm/sts?service=logs&stack_id={id}"),
        ),
        (Method::GET, "/v3/alm/pools".into()),
        (Method::POST, "/v3/alm/pools".into()),
        (Method::GET, "/v3/alm/pools/default".into()),
        (Method::PUT, "/v3/alm/pools/default".into()),
        (Method::DELETE, "/v3/alm/pools/default".into()),
    ]
}

/// What the store holds, as seen through the API.
async fn snapshot(t: &TestServer, token: &str, id: &str) -> Value {
    json!({
        "stacks": t.get("/v3/alm/stack?include_deleted=true", token).await.json(),
        "versions": t.get(&format!("/v3/alm/template?template_id={id}"), token).await.json(),
        "events": t.get("/v3/events", token).await.json(),
        "clients": t.get("/v3/admin/clients", token).await.json(),
        "join_tokens": t.get("/v3/alm/agent/join-token", token).await.json(),
        "containers": t.get(&format!("/v3/alm/stack/{id}/containers"), token).await.json(),
    })
}

#[tokio::test]
async fn bad_input_on_every_endpoint_gets_the_error_shape_and_stores_nothing() {
    let t = TestServer::start().await;
    let token = t.admin_token().await;
    let (id, _) = t.apply(&token, &reference_v1()).await;
    // Let the scheduler say why the stack waits (no agent) first: that is
    // its write, not a rejected request's.
    support::wait_reason(&t, &token, &id).await;
    let before = snapshot(&t, &token, &id).await;

    for (method, path) in authed_routes(&id) {
        let reply = t.send(method.clone(), &path, None, None).await;
        assert_eq!(reply.error(401), "unauthorized", "{method} {path}");
        let reply = t
            .send(method.clone(), &path, Some("expired-or-made-up"), None)
            .await;
        assert_eq!(reply.error(401), "unauthorized", "{method} {path}");
    }

    let oversized = "x".repeat(t.config.body_limit + 1);
    for (method, path) in body_routes(&id) {
        let request = || {
            t.http
                .request(method.clone(), t.url(&path))
                .bearer_auth(&token)
        };
        let malformed = t
            .raw(
                request()
                    .header("Content-Type", "application/json")
                    .body("{\"a\":"),
            )
            .await;
        assert_eq!(malformed.error(400), "malformed_json", "{method} {path}");
        let empty = t
            .raw(request().header("Content-Type", "application/json"))
            .await;
        assert_eq!(empty.error(400), "malformed_json", "{method} {path}");
        let trailing = t
            .raw(
                request()
                    .header("Content-Type", "application/json")
                    .body("{} {}"),
            )
            .await;
        assert_eq!(trailing.error(400), "malformed_json", "{method} {path}");
        let wrong_type = t.raw(request().json(&json!({"grant_type": [1], "stack_id": 5, "instance_id": {}, "status": 1, "username": 7, "id": 1}))).await;
        assert_eq!(
            wrong_type.status,
            StatusCode::BAD_REQUEST,
            "{method} {path}: {}",
            wrong_type.text
        );
        wrong_type.error(400);
        let text = t
            .raw(request().header("Content-Type", "text/plain").body("{}"))
            .await;
        assert_eq!(text.error(415), "unsupported_media_type", "{method} {path}");
        let none = t.raw(request().body("{}")).await;
        assert_eq!(none.error(415), "unsupported_media_type", "{method} {path}");
        let big = t
            .raw(
                request()
                    .header("Content-Type", "application/json")
                    .body(format!("{{\"k\":\"{oversized}\"}}")),
            )
            .await;
        assert_eq!(big.error(413), "payload_too_large", "{method} {path}");
    }

    // Unknown ids.
    for (method, path) in [
        (
            Method::GET,
            "/v3/alm/template?template_id=mo-none-tk".to_owned(),
        ),
        (Method::GET, "/v3/alm/template/mo-none-tk".to_owned()),
        (
            Method::GET,
            "/v3/alm/template/mo-none-tk/container?flag=Web01".to_owned(),
        ),
        (Method::GET, "/v3/alm/stack/mo-none-tk".to_owned()),
        (Method::POST, "/v3/alm/stack/mo-none-tk".to_owned()),
        (Method::DELETE, "/v3/alm/stack/mo-none-tk".to_owned()),
        (
            Method::GET,
            "/v3/alm/stack/mo-none-tk/containers".to_owned(),
        ),
        (Method::DELETE, "/v3/admin/clients/fc-none".to_owned()),
        (
            Method::DELETE,
            "/v3/alm/agent/join-token/jt-none".to_owned(),
        ),
        (Method::GET, "/v3/alm/agents/ag-none".to_owned()),
        (
            Method::POST,
            format!("/v3/alm/stack/{id}/instances/i-none/stop"),
        ),
        (
            Method::GET,
            format!("/v3/alm/stack/{id}/instances/i-none/logs"),
        ),
        (
            Method::POST,
            "/v3/alm/stack/mo-none-tk/instances/i-none/stop".to_owned(),
        ),
    ] {
        assert_eq!(
            t.send(method.clone(), &path, Some(&token), None)
                .await
                .error(404),
            "not_found",
            "{method} {path}"
        );
    }
    let reply = t
        .send(
            Method::PUT,
            "/v3/alm/template/mo-none-tk",
            Some(&token),
            Some(&reference_v1()),
        )
        .await;
    assert_eq!(reply.error(404), "not_found");

    // Wrong methods and unknown paths.
    for (method, path) in [
        (Method::PATCH, "/v3/alm/stack".to_owned()),
        (Method::PUT, "/v3/alm/template".to_owned()),
        (Method::GET, "/v3/access_token".to_owned()),
        (Method::DELETE, format!("/v3/alm/template/{id}")),
        (Method::GET, "/v3/event/spot/shutdown".to_owned()),
        (Method::PUT, "/v3/alm/template/compare".to_owned()),
    ] {
        let reply = t.send(method.clone(), &path, Some(&token), None).await;
        assert_eq!(reply.error(405), "method_not_allowed", "{method} {path}");
    }
    assert_eq!(
        t.get("/v3/nothing/here", &token).await.error(404),
        "not_found"
    );
    assert_eq!(
        t.get("/v3/events?since=abc", &token).await.error(400),
        "invalid_query"
    );

    assert_eq!(
        snapshot(&t, &token, &id).await,
        before,
        "no rejected request stored anything"
    );
    t.stop().await;
}

#[tokio::test]
async fn openapi_document_covers_every_route_and_error() {
    let t = TestServer::start().await;
    let reply = t.raw(t.http.get(t.url("/v3/openapi.json"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = reply.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    let expected: &[(&str, &[&str])] = &[
        ("/healthz", &["get"]),
        ("/metrics", &["get"]),
        ("/v3/openapi.json", &["get"]),
        ("/v3/access_token", &["post", "delete"]),
        ("/v3/alm/template", &["post", "get"]),
        ("/v3/alm/template/compare", &["post"]),
        ("/v3/alm/template/{template_id}", &["get", "put"]),
        ("/v3/alm/template/{template_id}/container", &["get"]),
        ("/v3/alm/template/{template_id}/rollback", &["post"]),
        ("/v3/alm/stack/{stack_id}/formation", &["patch"]),
        ("/v3/alm/stack/{stack_id}/config/{flag}", &["get", "patch"]),
        ("/v3/tasks/{task_id}", &["get"]),
        ("/v3/alm/stack", &["get", "post"]),
        ("/v3/alm/stack/{stack_id}", &["get", "post", "delete"]),
        ("/v3/alm/stack/{stack_id}/containers", &["get"]),
        ("/v3/event/spot/shutdown", &["post"]),
        ("/v3/event/container/status", &["post"]),
        ("/v3/events", &["get"]),
        ("/v3/hooks", &["post", "get"]),
        ("/v3/hooks/{hook_id}", &["delete"]),
        ("/v3/hooks/{hook_id}/deliveries", &["get"]),
        ("/v3/admin/clients", &["post", "get"]),
        ("/v3/admin/clients/{client_id}", &["delete"]),
        ("/v3/alm/agent/join-token", &["post", "get"]),
        ("/v3/alm/agent/join-token/{id}", &["delete"]),
        ("/v3/alm/agents", &["get"]),
        ("/v3/alm/agents/{agent_id}", &["get", "delete"]),
        ("/v3/alm/agents/{agent_id}/drain", &["post", "delete"]),
        ("/v3/alm/pools", &["get", "post"]),
        ("/v3/alm/pools/{name}", &["get", "put", "delete"]),
        (
            "/v3/alm/stack/{stack_id}/instances/{instance_id}/{action}",
            &["post"],
        ),
        (
            "/v3/alm/stack/{stack_id}/instances/{instance_id}/logs",
            &["get"],
        ),
        ("/v3/alm/agent/config", &["get"]),
        ("/v3/alm/sts", &["get"]),
        ("/v3/alm/agent/agent_status", &["post"]),
        ("/v3/alm/agent/container_status", &["post"]),
        ("/v3/audits", &["get"]),
        ("/v3/alm/stack/{stack_id}/restart", &["post"]),
        ("/v3/alm/stack/{stack_id}/stop", &["post"]),
        ("/v3/alm/stack/{stack_id}/start", &["post"]),
    ];
    let paths = doc["paths"].as_object().expect("paths");
    assert_eq!(
        paths.len(),
        expected.len(),
        "{:?}",
        paths.keys().collect::<Vec<_>>()
    );
    for (path, methods) in expected {
        let item = paths.get(*path).unwrap_or_else(|| panic!("{path} missing"));
        let documented: Vec<&String> = item.as_object().expect("item").keys().collect();
        assert_eq!(documented.len(), methods.len(), "{path}: {documented:?}");
        for method in *methods {
            let operation = &item[*method];
            let responses = operation["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path}"));
            let secured = operation["security"].is_array();
            if secured {
                assert!(
                    responses.contains_key("401"),
                    "{method} {path} documents 401"
                );
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    let has_body = [
        "/v3/alm/template",
        "/v3/alm/template/compare",
        "/v3/access_token",
        "/v3/event/spot/shutdown",
    ];
    for path in has_body {
        let responses = &paths[path]["post"]["responses"];
        for status in ["400", "413", "415"] {
            assert!(
                responses.get(status).is_some(),
                "POST {path} documents {status}"
            );
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    t.stop().await;
}

#[tokio::test]
async fn everything_survives_a_restart() {
    let t = TestServer::start().await;
    let token = t.admin_token().await;
    let (id, v1) = t.apply(&token, &support::container_template()).await;
    let (_, _, alice) = t.user("alice").await;
    let (alice_stack, _) = t.apply(&alice, &reference_v1()).await;
    let auth = t.get(&format!("/v3/alm/stack/{id}"), &token).await.json()["auth_token"]
        .as_str()
        .expect("auth")
        .to_owned();
    let reply = t
        .post(
            "/v3/event/container/status",
            &token,
            &json!({"stack_id": id, "instance_id": "i-1", "status": "running"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    // Let the scheduler settle the stack (it wants no instances) first.
    support::wait_status(&t, &token, &id, "CREATE_COMPLETE").await;
    let before = snapshot(&t, &token, &id).await;
    let versions_before = t
        .get(&format!("/v3/alm/template/{id}?version_id={v1}"), &token)
        .await
        .text;

    let t = t.restart().await;
    assert_eq!(
        snapshot(&t, &token, &id).await,
        before,
        "tokens, stacks, versions, events, clients kept"
    );
    assert_eq!(
        t.get(&format!("/v3/alm/template/{id}?version_id={v1}"), &token)
            .await
            .text,
        versions_before
    );
    assert_eq!(
        t.get(&format!("/v3/alm/stack/{alice_stack}"), &alice)
            .await
            .status,
        StatusCode::OK
    );
    // The admin client was not recreated.
    let clients = t.get("/v3/admin/clients", &token).await.json();
    assert_eq!(
        clients
            .as_array()
            .map(|c| c.iter().filter(|c| c["admin"] == true).count()),
        Some(1)
    );
    // New events continue after the old ones.
    let reply = t
        .post(
            "/v3/event/spot/shutdown",
            &auth,
            &json!({"stack_id": id, "instance_id": "i-1"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let events = t.get("/v3/events", &token).await.json();
    let ids: Vec<u64> = events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_u64().expect("id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    t.stop().await;
}
