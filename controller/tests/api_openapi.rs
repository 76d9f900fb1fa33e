//! The OpenAPI document says what the server does: the facts schemathesis
//! (scripts/api-conformance) relies on, checked against a real server so
//! a change to either side shows here first.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::TestServer;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(t: &TestServer) -> Value {
    let reply = t.raw(t.http.get(t.url("/v3/openapi.json"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()
}

/// Every (method, path, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                found.push((method.to_owned(), path.clone(), operation.clone()));
            }
        }
    }
    found
}

fn parameter<'a>(operation: &'a Value, name: &str) -> &'a Value {
    operation["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no parameter {name}: {operation}"))
}

#[tokio::test]
async fn every_operation_declares_the_rate_limit() {
    let t = TestServer::start().await;
    let doc = document(&t).await;
    let all = operations(&doc);
    assert!(all.len() >= 45, "{} operations", all.len());
    for (method, path, operation) in all {
        let responses = operation["responses"].as_object().expect("responses");
        let limited = &responses["429"];
        assert_eq!(
            limited["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody",
            "{method} {path}"
        );
        assert!(
            limited["headers"]["Retry-After"].is_object(),
            "{method} {path}"
        );
        for (status, response) in responses {
            for header in [
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
            ] {
                assert_eq!(
                    response["headers"][header]["schema"]["type"], "integer",
                    "{method} {path} {status} {header}"
                );
            }
        }
    }
    t.stop().await;
}

#[tokio::test]
async fn query_parameters_are_in_the_query_and_required_ones_say_so() {
    let t = TestServer::start().await;
    let doc = document(&t).await;
    for (method, path, operation) in operations(&doc) {
        let parameters = operation["parameters"].as_array().cloned();
        for p in parameters.into_iter().flatten() {
            let name = p["name"].as_str().unwrap_or_default();
            let in_path = path.contains(&format!("{{{name}}}"));
            let expected = if in_path { "path" } else { "query" };
            assert_eq!(p["in"], expected, "{method} {path} {name}");
            if !in_path {
                assert!(
                    !p["schema"]["type"]
                        .as_array()
                        .is_some_and(|t| t.contains(&json!("null"))),
                    "a query value is never null: {method} {path} {name}"
                );
            }
        }
        if operation["parameters"].is_array() {
            assert!(
                operation["responses"]["400"].is_object(),
                "{method} {path} documents the malformed parameter"
            );
        }
    }
    for (path, name) in [
        ("/v3/alm/template", "template_id"),
        ("/v3/alm/template/{template_id}/container", "flag"),
        ("/v3/alm/agent/config", "stack_id"),
        ("/v3/alm/agent/config", "flag"),
        ("/v3/alm/sts", "stack_id"),
        ("/v3/alm/sts", "service"),
    ] {
        let p = parameter(&doc["paths"][path]["get"], name);
        assert_eq!(p["required"], true, "{path} {name}");
        assert_eq!(p["schema"]["minLength"], 1, "{path} {name}");
    }
    let limit = parameter(&doc["paths"]["/v3/events"]["get"], "limit");
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&json!(1), &json!(10000))
    );
    t.stop().await;
}

#[tokio::test]
async fn malformed_query_values_are_refused_as_documented() {
    let t = TestServer::start().await;
    let admin = t.admin_token().await;
    for path in [
        "/v3/alm/stack?include_deleted=abc",
        "/v3/alm/stack?include_deleted=1",
        "/v3/alm/stack?include_deleted=true&include_deleted=false",
        "/v3/alm/agents?include_revoked=yes",
        "/v3/events?limit=0",
        "/v3/events?limit=10001",
        "/v3/events?since=-1",
        "/v3/alm/template",
        "/v3/alm/template?template_id=",
    ] {
        assert_eq!(
            t.get(path, &admin).await.error(400),
            "invalid_query",
            "{path}"
        );
    }
    for path in [
        "/v3/alm/stack?include_deleted=true",
        "/v3/alm/agents?include_revoked=false",
        "/v3/events?limit=1",
        "/v3/events?limit=10000",
    ] {
        let reply = t.get(path, &admin).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
    }
    t.stop().await;
}

#[tokio::test]
async fn an_admin_cannot_revoke_the_client_it_calls_with() {
    let t = TestServer::start().await;
    let admin = t.admin_token().await;
    let own = format!("/v3/admin/clients/{}", t.admin.client_id);
    let reply = t.send(Method::DELETE, &own, Some(&admin), None).await;
    assert_eq!(reply.error(403), "forbidden");
    assert_eq!(
        t.get("/v3/admin/clients", &admin).await.status,
        StatusCode::OK,
        "the admin still works"
    );
    // Another admin client may revoke it.
    let created = t
        .post(
            "/v3/admin/clients",
            &admin,
            &json!({"username": "second", "admin": true}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let second = created.json();
    let second = t
        .token_for(
            second["client_id"].as_str().expect("id"),
            second["client_secret"].as_str().expect("secret"),
        )
        .await;
    let reply = t.send(Method::DELETE, &own, Some(&second), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        t.get("/v3/admin/clients", &admin).await.error(401),
        "unauthorized"
    );
    t.stop().await;
}

#[tokio::test]
async fn well_formed_requests_that_cannot_be_done_are_not_400() {
    let t = TestServer::start().await;
    let admin = t.admin_token().await;
    // A repeated flag: well-formed, a conflict (409), nothing stored.
    let config = json!({"role": "web", "flag": "Web01", "provision": {"instance_count": 1}});
    let body = json!({"version": "1", "configurations": [config, config]});
    let reply = t.post("/v3/alm/template", &admin, &body).await;
    assert_eq!(reply.error(409), "duplicate_flag");
    assert_eq!(
        reply.json()["errors"][0]["context"]["path"],
        "/configurations/1/flag"
    );
    assert_eq!(t.get("/v3/alm/stack", &admin).await.json(), json!([]));
    // A hook whose host does not resolve is refused by policy (403).
    let reply = t
        .post(
            "/v3/hooks",
            &admin,
            &json!({"url": "http://does-not-resolve.invalid/hook"}),
        )
        .await;
    assert_eq!(reply.error(403), "webhook_target_refused");
    // Whitespace around a hook URL is malformed, not trimmed.
    let reply = t
        .post("/v3/hooks", &admin, &json!({"url": " http://127.0.0.1:9/"}))
        .await;
    assert_eq!(reply.error(400), "invalid_field");
    t.stop().await;
}

#[tokio::test]
async fn whole_numbers_written_with_a_fraction_are_integers() {
    let t = TestServer::start().await;
    let admin = t.admin_token().await;
    let reply = t
        .post(
            "/v3/alm/agent/join-token",
            &admin,
            &json!({"max_uses": 2.0, "ttl_secs": 60.0}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let reply = t
        .post(
            "/v3/alm/agent/join-token",
            &admin,
            &json!({"max_uses": 2.5}),
        )
        .await;
    assert_eq!(reply.error(400), "invalid_field");
    t.stop().await;
}
