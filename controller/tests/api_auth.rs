//! Access tokens, their expiry and revocation, clients, and who sees what.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use support::{reference_v1, TestServer};

#[tokio::test]
async fn client_credentials_give_a_bearer_token_as_in_the_reference() {
    let t = TestServer::start().await;
    let reply = t
        .send(
            Method::POST,
            "/v3/access_token",
            None,
            Some(&json!({"grant_type": "client_credentials", "client_id": t.admin.client_id, "client_secret": t.admin.client_secret})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["token_type", "expires_in", "access_token"]);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600, "the configured lifetime");
    let token = body["access_token"].as_str().expect("token");
    assert!(token.len() >= 40);
    assert_eq!(t.get("/v3/alm/stack", token).await.status, StatusCode::OK);
    // The scheme is case-insensitive (RFC 6750), as the alm-agent sends `<token_type> <token>`.
    let reply = t
        .raw(
            t.http
                .get(t.url("/v3/alm/stack"))
                .header("Authorization", format!("bearer {token}")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    t.stop().await;
}

#[tokio::test]
async fn form_encoded_token_requests_work_too() {
    let t = TestServer::start().await;
    let reply = t
        .raw(t.http.post(t.url("/v3/access_token")).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", t.admin.client_id.as_str()),
            ("client_secret", t.admin.client_secret.as_str()),
        ]))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["token_type"], "Bearer");
    t.stop().await;
}

#[tokio::test]
async fn bad_token_requests_are_refused_with_oauth_codes() {
    let t = TestServer::start().await;
    let cases = [
        (
            json!({"grant_type": "client_credentials", "client_id": t.admin.client_id, "client_secret": "wrong"}),
            401,
            "invalid_client",
        ),
        (
            json!({"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "wrong"}),
            401,
            "invalid_client",
        ),
        (
            json!({"grant_type": "password", "client_id": t.admin.client_id, "client_secret": t.admin.client_secret}),
            400,
            "unsupported_grant_type",
        ),
        (
            json!({"client_id": t.admin.client_id, "client_secret": t.admin.client_secret}),
            400,
            "invalid_request",
        ),
        (
            json!({"grant_type": "client_credentials", "client_id": t.admin.client_id}),
            400,
            "invalid_request",
        ),
        (json!({"grant_type": 5}), 400, "invalid_field"),
        (json!([1, 2]), 400, "invalid_field"),
    ];
    for (body, status, code) in cases {
        let reply = t
            .send(Method::POST, "/v3/access_token", None, Some(&body))
            .await;
        assert_eq!(reply.error(status), code, "{body}");
    }
    let reply = t
        .raw(
            t.http
                .post(t.url("/v3/access_token"))
                .header("Content-Type", "text/plain")
                .body("x"),
        )
        .await;
    assert_eq!(reply.error(415), "unsupported_media_type");
    t.stop().await;
}

#[tokio::test]
async fn missing_malformed_unknown_expired_and_revoked_tokens_get_401() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = support::config_for(dir.path());
    config.token_ttl = Duration::from_secs(1);
    let t = TestServer::start_with(dir, config).await;

    let reply = t.send(Method::GET, "/v3/alm/stack", None, None).await;
    assert_eq!(reply.error(401), "unauthorized");
    assert!(reply.headers.contains_key("www-authenticate"));
    for header in ["Basic abc", "Bearer", "Bearer    ", "nonsense"] {
        let reply = t
            .raw(
                t.http
                    .get(t.url("/v3/alm/stack"))
                    .header("Authorization", header),
            )
            .await;
        assert_eq!(reply.error(401), "unauthorized", "{header}");
    }
    assert_eq!(
        t.get("/v3/alm/stack", "not-a-token").await.error(401),
        "unauthorized"
    );

    let token = t.admin_token().await;
    assert_eq!(t.get("/v3/alm/stack", &token).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = t.get("/v3/alm/stack", &token).await;
    assert_eq!(reply.error(401), "unauthorized");
    assert!(reply.text.contains("expired"), "{}", reply.text);

    let token = t.admin_token().await;
    let reply = t
        .send(Method::DELETE, "/v3/access_token", Some(&token), None)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = t.get("/v3/alm/stack", &token).await;
    assert_eq!(reply.error(401), "unauthorized");
    assert!(reply.text.contains("revoked"), "{}", reply.text);
    t.stop().await;
}

#[tokio::test]
async fn revoking_a_client_kills_its_tokens_and_its_logins() {
    let t = TestServer::start().await;
    let (id, secret, token) = t.user("alice").await;
    assert_eq!(t.get("/v3/alm/stack", &token).await.status, StatusCode::OK);
    let admin = t.admin_token().await;
    let reply = t
        .send(
            Method::DELETE,
            &format!("/v3/admin/clients/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(reply.json()["revoked"].is_string());
    assert!(!reply.text.contains(&secret));
    assert_eq!(
        t.get("/v3/alm/stack", &token).await.error(401),
        "unauthorized"
    );
    let reply = t
        .send(Method::POST, "/v3/access_token", None, Some(&json!({"grant_type": "client_credentials", "client_id": id, "client_secret": secret})))
        .await;
    assert_eq!(reply.error(401), "invalid_client");
    let reply = t
        .send(
            Method::DELETE,
            "/v3/admin/clients/fc-nope",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(reply.error(404), "not_found");
    t.stop().await;
}

#[tokio::test]
async fn users_see_only_their_own_stacks_and_admins_see_all() {
    let t = TestServer::start().await;
    let (_, _, alice) = t.user("alice").await;
    let (_, _, bob) = t.user("bob").await;
    let (stack, version) = t.apply(&alice, &reference_v1()).await;

    for path in [
        format!("/v3/alm/stack/{stack}"),
        format!("/v3/alm/template/{stack}"),
        format!("/v3/alm/template?template_id={stack}"),
        format!("/v3/alm/template/{stack}/container?flag=Web01"),
        format!("/v3/alm/stack/{stack}/containers"),
    ] {
        assert_eq!(t.get(&path, &bob).await.error(404), "not_found", "{path}");
    }
    let reply = t
        .send(
            Method::PUT,
            &format!("/v3/alm/template/{stack}"),
            Some(&bob),
            Some(&reference_v1()),
        )
        .await;
    assert_eq!(reply.error(404), "not_found");
    let reply = t
        .send(
            Method::DELETE,
            &format!("/v3/alm/stack/{stack}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(reply.error(404), "not_found");
    let compare = json!({"id": [{stack.clone(): {"version": version}}, {stack.clone(): {"version": "latest"}}]});
    assert_eq!(
        t.post("/v3/alm/template/compare", &bob, &compare)
            .await
            .error(404),
        "not_found"
    );
    assert_eq!(t.get("/v3/alm/stack", &bob).await.json(), json!([]));
    assert_eq!(t.get("/v3/events", &bob).await.json(), json!([]));

    let mine = t.get("/v3/alm/stack", &alice).await.json();
    assert_eq!(mine.as_array().map(Vec::len), Some(1));
    assert_eq!(mine[0]["username"], "alice");
    let admin = t.admin_token().await;
    let all = t.get(&format!("/v3/alm/stack/{stack}"), &admin).await;
    assert_eq!(all.status, StatusCode::OK);

    // Non-admins cannot manage clients.
    assert_eq!(
        t.get("/v3/admin/clients", &alice).await.error(403),
        "forbidden"
    );
    let reply = t
        .post(
            "/v3/admin/clients",
            &alice,
            &json!({"username": "mallory", "admin": true}),
        )
        .await;
    assert_eq!(reply.error(403), "forbidden");
    let listed = t.get("/v3/admin/clients", &admin).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json().as_array().map(Vec::len), Some(3));
    assert!(!listed.text.contains("secret"), "{}", listed.text);
    t.stop().await;
}

#[tokio::test]
async fn a_stack_token_reaches_only_its_own_agent_endpoints() {
    let t = TestServer::start().await;
    let admin = t.admin_token().await;
    let (stack, _) = t.apply(&admin, &support::container_template()).await;
    let (other, _) = t.apply(&admin, &support::container_template()).await;
    let auth_token = t
        .get(&format!("/v3/alm/stack/{stack}"), &admin)
        .await
        .json()["auth_token"]
        .as_str()
        .expect("auth_token")
        .to_owned();

    // As the Go agent does: client_id = stack id, client_secret = auth_token.
    let agent = t.token_for(&stack, &auth_token).await;
    let reply = t
        .get(
            &format!("/v3/alm/template/{stack}/container?flag=Web01"),
            &agent,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        t.get(
            &format!("/v3/alm/template/{other}/container?flag=Web01"),
            &agent
        )
        .await
        .error(404),
        "not_found"
    );
    assert_eq!(t.get("/v3/alm/stack", &agent).await.error(403), "forbidden");
    assert_eq!(
        t.post("/v3/alm/template", &agent, &reference_v1())
            .await
            .error(403),
        "forbidden"
    );
    assert_eq!(
        t.get(&format!("/v3/alm/stack/{stack}"), &agent)
            .await
            .error(403),
        "forbidden"
    );
    let reply = t
        .post(
            "/v3/event/container/status",
            &agent,
            &json!({"stack_id": other, "instance_id": "i-1", "status": "running"}),
        )
        .await;
    assert_eq!(reply.error(403), "forbidden");
    // The wrong stack secret is refused.
    let reply = t
        .send(Method::POST, "/v3/access_token", None, Some(&json!({"grant_type": "client_credentials", "client_id": stack, "client_secret": "wrong"})))
        .await;
    assert_eq!(reply.error(401), "invalid_client");
    t.stop().await;
}

#[tokio::test]
async fn join_tokens_need_a_pool_of_the_caller_and_pinned_need_the_stack() {
    let t = TestServer::start().await;
    let (_, _, alice) = t.user("alice").await;
    let (_, _, bob) = t.user("bob").await;
    let (_, _, carol) = t.user_in_no_pool("carol").await;
    let (stack, _) = t.apply(&alice, &support::container_template()).await;
    let admin = t.admin_token().await;
    let reply = t
        .post(
            "/v3/alm/pools",
            &admin,
            &json!({"name": "team-x", "users": ["bob"]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);

    // Unpinned: only for a pool that lists the caller (or by an admin).
    let reply = t.post("/v3/alm/agent/join-token", &carol, &json!({})).await;
    assert_eq!(reply.error(403), "forbidden");
    let reply = t
        .post(
            "/v3/alm/agent/join-token",
            &alice,
            &json!({"pool": "team-x"}),
        )
        .await;
    assert_eq!(reply.error(403), "forbidden");
    let reply = t
        .post("/v3/alm/agent/join-token", &bob, &json!({"pool": "team-x"}))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.json()["pool"], "team-x");
    let reply = t.post("/v3/alm/agent/join-token", &alice, &json!({})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.json()["pool"], "default");
    let reply = t
        .post("/v3/alm/agent/join-token", &admin, &json!({"pool": "nope"}))
        .await;
    assert_eq!(reply.error(404), "not_found");
    // Only an admin may make a token that replaces enrolled instances.
    let reply = t
        .post(
            "/v3/alm/agent/join-token",
            &alice,
            &json!({"replace": true}),
        )
        .await;
    assert_eq!(reply.error(403), "forbidden");
    let reply = t
        .post(
            "/v3/alm/agent/join-token",
            &admin,
            &json!({"replace": true}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.json()["replace"], true);
    // A pinned token joins its configuration's pool and no other.
    let reply = t
        .post(
            "/v3/alm/agent/join-token",
            &alice,
            &json!({"stack_id": stack, "flag": "Web01", "pool": "team-x"}),
        )
        .await;
    assert_eq!(reply.error(409), "conflict");
    let reply = t
        .post(
            "/v3/alm/agent/join-token",
            &alice,
            &json!({"stack_id": stack, "flag": "Web01", "max_uses": 3, "ttl_secs": 600}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let created = reply.json();
    assert!(created["token"]
        .as_str()
        .is_some_and(|t| t.starts_with("fjt_")));
    assert!(created["ca_fingerprint"]
        .as_str()
        .is_some_and(|f| f.starts_with("sha256:") && f.len() == 71));
    assert_eq!(created["max_uses"], 3);
    assert_eq!(created["stack_id"], stack.as_str());
    assert_eq!(created["pool"], "default");
    // Bob cannot pin to Alice's stack, nor see or revoke her token.
    let reply = t
        .post(
            "/v3/alm/agent/join-token",
            &bob,
            &json!({"stack_id": stack, "flag": "Web01"}),
        )
        .await;
    assert_eq!(reply.error(404), "not_found");
    let id = created["id"].as_str().expect("id");
    let bobs = t.get("/v3/alm/agent/join-token", &bob).await.json();
    let bobs = bobs.as_array().expect("list");
    assert_eq!(bobs.len(), 1, "only his own team-x token: {bobs:?}");
    assert!(bobs.iter().all(|t| t["id"] != id && t["pool"] == "team-x"));
    let reply = t
        .send(
            Method::DELETE,
            &format!("/v3/alm/agent/join-token/{id}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(reply.error(404), "not_found");
    // Bad fields.
    for body in [
        json!({"stack_id": stack, "flag": "Nope"}),
        json!({"stack_id": stack}),
        json!({"max_uses": 0}),
        json!({"ttl_secs": 0}),
        json!({"surprise": true}),
    ] {
        let reply = t.post("/v3/alm/agent/join-token", &admin, &body).await;
        assert!(reply.status.is_client_error(), "{body}: {}", reply.text);
        reply.error(reply.status.as_u16());
    }
    let listed = t.get("/v3/alm/agent/join-token", &alice).await;
    assert_eq!(listed.json()[0]["state"], "active");
    assert!(!listed.text.contains("fjt_"), "secrets are never listed");
    let reply = t
        .send(
            Method::DELETE,
            &format!("/v3/alm/agent/join-token/{id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(reply.json()["state"], "revoked");
    // Agents are fleet infrastructure: admins only.
    assert_eq!(
        t.get("/v3/alm/agents", &alice).await.error(403),
        "forbidden"
    );
    assert_eq!(t.get("/v3/alm/agents", &admin).await.json(), json!([]));
    t.stop().await;
}
