//! Quotas: a user or credential holds only so much; past a cap, things a
//! user creates are refused (409 `quota_exceeded`, naming the quota) and
//! access tokens make the oldest of the same credential lapse, never
//! another's.

mod support;

use flotilla_controller::quotas::Quotas;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{reference_v1, TestServer};

async fn start(quotas: Quotas) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = support::config_for(dir.path());
    config.quotas = quotas;
    TestServer::start_with(dir, config).await
}

/// Mints a token with a stack's own credentials, as the alm-agent does on
/// every run.
async fn stack_token(t: &TestServer, stack_id: &str, auth_token: &str) -> String {
    t.token_for(stack_id, auth_token).await
}

async fn auth_token(t: &TestServer, owner: &str, stack_id: &str) -> String {
    t.get(&format!("/v3/alm/stack/{stack_id}"), owner)
        .await
        .json()["auth_token"]
        .as_str()
        .expect("auth_token")
        .to_owned()
}

/// What a client token may call: its stacks.
async fn client_status(t: &TestServer, token: &str) -> StatusCode {
    t.get("/v3/alm/stack", token).await.status
}

/// What a stack token may call: its configuration.
async fn stack_status(t: &TestServer, stack_id: &str, token: &str) -> StatusCode {
    t.get(
        &format!("/v3/alm/agent/config?stack_id={stack_id}&flag=Web01"),
        token,
    )
    .await
    .status
}

fn assert_quota(reply: &support::Reply, quota: &str, limit: u64) {
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    let body = reply.json();
    let error = &body["errors"][0];
    assert_eq!(error["code"], "quota_exceeded", "{body}");
    assert_eq!(error["context"]["quota"], quota, "{body}");
    assert_eq!(error["context"]["limit"], limit, "{body}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains(quota), "{message}");
}

#[tokio::test]
async fn a_clients_oldest_tokens_lapse_and_no_other_clients_do() {
    let t = start(Quotas {
        tokens_per_client: 3,
        ..Quotas::default()
    })
    .await;
    let (id, secret, first) = t.user("alice").await;
    let (_, _, bobs) = t.user("bob").await;
    let mut tokens = vec![first];
    for _ in 0..3 {
        tokens.push(t.token_for(&id, &secret).await);
    }
    // Four minted under a cap of three: the first lapsed, the rest work.
    assert_eq!(
        client_status(&t, &tokens[0]).await,
        StatusCode::UNAUTHORIZED
    );
    for token in &tokens[1..] {
        assert_eq!(client_status(&t, token).await, StatusCode::OK);
    }
    // Bob's token, minted before all of Alice's, is untouched.
    assert_eq!(client_status(&t, &bobs).await, StatusCode::OK);
    // Revoked tokens do not count: after a logout the next mint lapses
    // nothing that still works.
    let reply = t
        .send(Method::DELETE, "/v3/access_token", Some(&tokens[3]), None)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let fresh = t.token_for(&id, &secret).await;
    for token in [&tokens[1], &tokens[2], &fresh] {
        assert_eq!(client_status(&t, token).await, StatusCode::OK);
    }
}

#[tokio::test]
async fn stack_tokens_count_against_their_own_stack_only() {
    let t = start(Quotas {
        stack_tokens_per_instance: 4,
        tokens_per_client: 2,
        ..Quotas::default()
    })
    .await;
    let (_, _, alice) = t.user("alice").await;
    let (stack, _) = t.apply(&alice, &reference_v1()).await;
    let (other, _) = t.apply(&alice, &reference_v1()).await;
    let secret = auth_token(&t, &alice, &stack).await;
    let other_secret = auth_token(&t, &alice, &other).await;
    let others = stack_token(&t, &other, &other_secret).await;

    // One instance: four tokens at once. Six mints, far past the owner's
    // own client cap of two, which they never touch.
    let mut tokens = Vec::new();
    for _ in 0..6 {
        tokens.push(stack_token(&t, &stack, &secret).await);
    }
    for token in &tokens[..2] {
        assert_eq!(
            stack_status(&t, &stack, token).await,
            StatusCode::UNAUTHORIZED
        );
    }
    for token in &tokens[2..] {
        assert_eq!(stack_status(&t, &stack, token).await, StatusCode::OK);
    }
    assert_eq!(stack_status(&t, &other, &others).await, StatusCode::OK);
    assert_eq!(client_status(&t, &alice).await, StatusCode::OK);

    // Three instances: room for twelve.
    let mut scaled = reference_v1();
    scaled["configurations"][0]["provision"]["instance_count"] = json!(3);
    let reply = t
        .send(
            Method::PUT,
            &format!("/v3/alm/template/{stack}"),
            Some(&alice),
            Some(&scaled),
        )
        .await;
    assert!(reply.status.is_success(), "{}", reply.text);
    let mut tokens = Vec::new();
    for _ in 0..12 {
        tokens.push(stack_token(&t, &stack, &secret).await);
    }
    for token in &tokens {
        assert_eq!(stack_status(&t, &stack, token).await, StatusCode::OK);
    }
}

#[tokio::test]
async fn stacks_per_user_are_capped_per_user() {
    let t = start(Quotas {
        stacks_per_user: 2,
        ..Quotas::default()
    })
    .await;
    let (_, _, alice) = t.user("alice").await;
    let (_, _, bob) = t.user("bob").await;
    let (first, _) = t.apply(&alice, &reference_v1()).await;
    t.apply(&alice, &reference_v1()).await;
    let reply = t.post("/v3/alm/template", &alice, &reference_v1()).await;
    assert_quota(&reply, "max_stacks_per_user", 2);
    let listed = t.get("/v3/alm/stack", &alice).await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");

    // Bob has his own quota.
    t.apply(&bob, &reference_v1()).await;

    // A deleted stack frees its place.
    let reply = t
        .send(
            Method::DELETE,
            &format!("/v3/alm/stack/{first}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    support::wait_status(&t, &alice, &first, "DELETE_COMPLETE").await;
    t.apply(&alice, &reference_v1()).await;
}

#[tokio::test]
async fn hooks_per_user_are_capped() {
    let t = start(Quotas {
        hooks_per_user: 1,
        ..Quotas::default()
    })
    .await;
    let (_, _, alice) = t.user("alice").await;
    let (_, _, bob) = t.user("bob").await;
    let hook = json!({"url": "http://127.0.0.1:9/hook", "events": ["stack.created"]});
    let reply = t.post("/v3/hooks", &alice, &hook).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.json()["id"].as_str().expect("id").to_owned();
    let reply = t.post("/v3/hooks", &alice, &hook).await;
    assert_quota(&reply, "max_hooks_per_user", 1);
    let reply = t.post("/v3/hooks", &bob, &hook).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let reply = t
        .send(
            Method::DELETE,
            &format!("/v3/hooks/{id}"),
            Some(&alice),
            None,
        )
        .await;
    assert!(reply.status.is_success(), "{}", reply.text);
    let reply = t.post("/v3/hooks", &alice, &hook).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
}

#[tokio::test]
async fn active_join_tokens_per_user_are_capped() {
    let t = start(Quotas {
        join_tokens_per_user: 2,
        ..Quotas::default()
    })
    .await;
    let (_, _, alice) = t.user("alice").await;
    let (_, _, bob) = t.user("bob").await;
    let mut ids: Vec<String> = Vec::new();
    for _ in 0..2 {
        let reply = t.post("/v3/alm/agent/join-token", &alice, &json!({})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        ids.push(reply.json()["id"].as_str().expect("id").to_owned());
    }
    let reply = t.post("/v3/alm/agent/join-token", &alice, &json!({})).await;
    assert_quota(&reply, "max_join_tokens_per_user", 2);
    let reply = t.post("/v3/alm/agent/join-token", &bob, &json!({})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);

    // A revoked token no longer counts.
    let reply = t
        .send(
            Method::DELETE,
            &format!("/v3/alm/agent/join-token/{}", ids[0]),
            Some(&alice),
            None,
        )
        .await;
    assert!(reply.status.is_success(), "{}", reply.text);
    let reply = t.post("/v3/alm/agent/join-token", &alice, &json!({})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let listed: Value = t.get("/v3/alm/agent/join-token", &alice).await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
}

#[test]
fn a_stack_token_quota_below_four_per_instance_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = support::config_for(dir.path());
    config.quotas.stack_tokens_per_instance = 3;
    let err = config.validate().expect_err("refused");
    assert!(
        err.to_string().contains("stack_tokens_per_instance"),
        "{err}"
    );
    config.quotas.stack_tokens_per_instance = 4;
    config.validate().expect("four per instance is enough");
    config.quotas.hooks_per_user = 0;
    let err = config.validate().expect_err("refused");
    assert!(err.to_string().contains("max_hooks_per_user"), "{err}");
}
