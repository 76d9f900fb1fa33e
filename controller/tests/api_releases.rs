//! Scale, rollback and config vars: each makes the next version from one
//! the stack has, refuses bad input with the error shape and stores
//! nothing then, and reaches only the caller's own stacks.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{reference_v1, reference_v2, TestServer};

async fn versions(t: &TestServer, token: &str, id: &str) -> Vec<Value> {
    let reply = t
        .get(&format!("/v3/alm/template?template_id={id}"), token)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json().as_array().expect("versions").clone()
}

async fn body(t: &TestServer, token: &str, id: &str, version: Option<&str>) -> Value {
    let path = match version {
        Some(v) => format!("/v3/alm/template/{id}?version_id={v}"),
        None => format!("/v3/alm/template/{id}"),
    };
    let reply = t.get(&path, token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json()
}

async fn events_of(t: &TestServer, token: &str, id: &str, kind: &str) -> Vec<Value> {
    let reply = t.get(&format!("/v3/events?stack_id={id}"), token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply
        .json()
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == kind)
        .cloned()
        .collect()
}

/// Updates a stack with `template`; the new version's id.
async fn update(t: &TestServer, token: &str, id: &str, template: &Value) -> String {
    let path = format!("/v3/alm/template/{id}");
    let reply = t
        .send(Method::PUT, &path, Some(token), Some(template))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    reply.json()["version_id"]
        .as_str()
        .expect("version")
        .to_owned()
}

/// A token minted with the stack's own credentials, as its agents do.
async fn stack_token(t: &TestServer, token: &str, id: &str) -> String {
    let stack = t.get(&format!("/v3/alm/stack/{id}"), token).await.json();
    let auth_token = stack["auth_token"].as_str().expect("auth_token");
    t.token_for(id, auth_token).await
}

async fn patch(t: &TestServer, token: &str, path: &str, body: &Value) -> support::Reply {
    t.send(Method::PATCH, path, Some(token), Some(body)).await
}

fn two_configs() -> Value {
    json!({
        "version": "2017-03-03",
        "label": "two",
        "vendor": {"aws": {"region": "ap-northeast-1"}},
        "configurations": [
            {"role": "web", "flag": "Web01", "provision": {"instance_type": "t2.micro", "instance_count": 1},
             "container": {"image": "web", "environment_variables": {"STAGE": "dev", "PORT": 80, "API_TOKEN": "s3cret-value"},
                           "secret_variables": ["API_TOKEN"]}},
            {"role": "worker", "flag": "Job01", "provision": {"instance_count": 2}},
        ]
    })
}

#[tokio::test]
async fn scaling_changes_only_the_counts_named() {
    let t = TestServer::start().await;
    let (_, _, token) = t.user("scaler").await;
    let (id, v1) = t.apply(&token, &two_configs()).await;
    let path = format!("/v3/alm/stack/{id}/formation");

    let reply = patch(
        &t,
        &token,
        &path,
        &json!([{"flag": "Web01", "instance_count": 3}]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let scaled = reply.json();
    assert_eq!(scaled["status"], "success");
    assert_eq!(scaled["stack_status"], "UPDATE_IN_PROGRESS");
    assert_eq!(scaled["template_id"], id);
    let v2 = scaled["version_id"].as_str().expect("version").to_owned();
    assert_ne!(v2, v1);

    let mut want = two_configs();
    want["configurations"][0]["provision"]["instance_count"] = json!(3);
    // Operators read secrets redacted; everything else is the old body.
    want["configurations"][0]["container"]["environment_variables"]["API_TOKEN"] =
        json!("[redacted]");
    assert_eq!(body(&t, &token, &id, None).await, want);
    assert_eq!(versions(&t, &token, &id).await.len(), 2);
    let events = events_of(&t, &token, &id, "stack.scaled").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0]["data"]["formation"],
        json!([{"flag": "Web01", "instance_count": 3}])
    );

    // Bad input: the error shape, and no new version.
    for (request, status, code) in [
        (
            json!([{"flag": "Nope", "instance_count": 1}]),
            409,
            "unknown_flag",
        ),
        (
            json!([{"flag": "Web01", "instance_count": -1}]),
            400,
            "invalid_field",
        ),
        (json!([]), 400, "invalid_template"),
        (
            json!([{"flag": "Web01", "instance_count": 1}, {"flag": "Web01", "instance_count": 2}]),
            409,
            "duplicate_flag",
        ),
        (json!({"flag": "Web01"}), 400, "invalid_field"),
    ] {
        let reply = patch(&t, &token, &path, &request).await;
        assert_eq!(reply.error(status), code, "{request}: {}", reply.text);
    }
    assert_eq!(versions(&t, &token, &id).await.len(), 2);
    t.stop().await;
}

#[tokio::test]
async fn rollback_makes_a_new_version_from_an_old_body() {
    let t = TestServer::start().await;
    let admin = t.admin_token().await;
    let (id, v1) = t.apply(&admin, &reference_v1()).await;
    let rollback = format!("/v3/alm/template/{id}/rollback");
    // Nothing before the only version.
    let reply = t.post(&rollback, &admin, &json!({})).await;
    assert_eq!(reply.error(409), "conflict", "{}", reply.text);

    let mut v2_body = reference_v2();
    v2_body["vendor"] = json!({"gcp": {"project": "elsewhere"}});
    let v2 = update(&t, &admin, &id, &v2_body).await;

    // The default is the version before the latest.
    let reply = t.post(&rollback, &admin, &json!({})).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let v3 = reply.json()["version_id"].as_str().expect("v3").to_owned();
    assert_eq!(body(&t, &admin, &id, None).await, reference_v1());
    // History is kept as it was.
    assert_eq!(
        body(&t, &admin, &id, Some(&v2)).await["label"],
        "template version label #2"
    );
    let listed = versions(&t, &admin, &id).await;
    let ids: Vec<&str> = listed
        .iter()
        .filter_map(|v| v["version_id"].as_str())
        .collect();
    assert_eq!(ids, [v3.as_str(), v2.as_str(), v1.as_str()]);
    let events = events_of(&t, &admin, &id, "stack.rolled_back").await;
    assert_eq!(events[0]["data"]["body_of_version_id"], v1);

    // A named version.
    let reply = t.post(&rollback, &admin, &json!({"version_id": v2})).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(
        body(&t, &admin, &id, None).await["label"],
        "template version label #2"
    );
    assert_eq!(
        body(&t, &admin, &id, None).await["vendor"],
        reference_v1()["vendor"]
    );

    // Bad input: the latest itself, another stack's version, unknown fields.
    let latest = versions(&t, &admin, &id).await[0]["version_id"]
        .as_str()
        .expect("latest")
        .to_owned();
    let (other, other_v1) = t.apply(&admin, &reference_v1()).await;
    for (request, status, code) in [
        (json!({"version_id": latest}), 409, "conflict"),
        (json!({"version_id": other_v1}), 404, "not_found"),
        (json!({"version": "x"}), 400, "invalid_field"),
    ] {
        let reply = t.post(&rollback, &admin, &request).await;
        assert_eq!(reply.error(status), code, "{request}: {}", reply.text);
    }
    assert_eq!(versions(&t, &admin, &id).await.len(), 4);
    assert_eq!(versions(&t, &admin, &other).await.len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn config_vars_are_flat_secrets_redacted_and_kept_through_a_round_trip() {
    let t = TestServer::start().await;
    let (_, _, token) = t.user("configurer").await;
    let (id, _) = t.apply(&token, &two_configs()).await;
    let path = format!("/v3/alm/stack/{id}/config/Web01");

    let reply = t.get(&path, &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json(),
        json!({"STAGE": "dev", "PORT": "80", "API_TOKEN": "[redacted]"})
    );
    assert_eq!(
        t.get(&format!("/v3/alm/stack/{id}/config/Job01"), &token)
            .await
            .json(),
        json!({})
    );
    // Nowhere an operator reads the stack does the secret show.
    for shown in [
        t.get(&format!("/v3/alm/template/{id}"), &token).await.text,
        t.get(&format!("/v3/alm/stack/{id}"), &token).await.text,
        t.get(
            &format!("/v3/alm/template/{id}/container?flag=Web01"),
            &token,
        )
        .await
        .text,
        t.get("/v3/alm/stack", &token).await.text,
        t.get(
            &format!("/v3/alm/agent/config?stack_id={id}&flag=Web01"),
            &token,
        )
        .await
        .text,
    ] {
        assert!(!shown.contains("s3cret-value"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }

    // Set and remove in one version; the event names keys, never values.
    let reply = patch(
        &t,
        &token,
        &path,
        &json!({"STAGE": "prod", "PORT": null, "WORKERS": 4}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(
        t.get(&path, &token).await.json(),
        json!({"STAGE": "prod", "API_TOKEN": "[redacted]", "WORKERS": "4"})
    );
    let events = events_of(&t, &token, &id, "stack.config_changed").await;
    assert_eq!(events[0]["data"]["set"], json!(["STAGE", "WORKERS"]));
    assert_eq!(events[0]["data"]["unset"], json!(["PORT"]));
    assert!(!events[0].to_string().contains("prod"), "{}", events[0]);

    // What an operator read back and sends again keeps the stored secret:
    // the stack's own agents still get it.
    let read = body(&t, &token, &id, None).await;
    update(&t, &token, &id, &read).await;
    let agent = stack_token(&t, &token, &id).await;
    let served = t
        .get(
            &format!("/v3/alm/template/{id}/container?flag=Web01"),
            &agent,
        )
        .await
        .json();
    assert_eq!(served["environment_variables"]["API_TOKEN"], "s3cret-value");
    assert_eq!(served["environment_variables"]["STAGE"], "prod");
    let flat = t
        .get(
            &format!("/v3/alm/agent/config?stack_id={id}&flag=Web01"),
            &agent,
        )
        .await
        .json();
    assert_eq!(
        flat["container_env_vars"]["API_TOKEN"], "s3cret-value",
        "{flat}"
    );

    // Bad input: the error shape, and no new version.
    let before = versions(&t, &token, &id).await.len();
    for (flag, request, status, code) in [
        ("Web01", json!({"1BAD": "x"}), 400, "invalid_template"),
        ("Web01", json!({"OK": ["x"]}), 400, "invalid_template"),
        ("Web01", json!({}), 400, "invalid_template"),
        ("Nope", json!({"OK": "x"}), 404, "not_found"),
        ("Job01", json!({"OK": "x"}), 409, "conflict"),
    ] {
        let reply = patch(
            &t,
            &token,
            &format!("/v3/alm/stack/{id}/config/{flag}"),
            &request,
        )
        .await;
        assert_eq!(
            reply.error(status),
            code,
            "{flag} {request}: {}",
            reply.text
        );
    }
    assert_eq!(
        t.get(&format!("/v3/alm/stack/{id}/config/Nope"), &token)
            .await
            .error(404),
        "not_found"
    );
    assert_eq!(versions(&t, &token, &id).await.len(), before);
    t.stop().await;
}

#[tokio::test]
async fn nobody_else_reaches_these_operations() {
    let t = TestServer::start().await;
    let (_, _, owner) = t.user("owner").await;
    let (_, _, other) = t.user("intruder").await;
    let (id, _) = t.apply(&owner, &two_configs()).await;
    update(&t, &owner, &id, &two_configs()).await;
    let stack_token = stack_token(&t, &owner, &id).await;
    let formation = format!("/v3/alm/stack/{id}/formation");
    let rollback = format!("/v3/alm/template/{id}/rollback");
    let config = format!("/v3/alm/stack/{id}/config/Web01");
    for (token, status, code) in [(&other, 404, "not_found"), (&stack_token, 403, "forbidden")] {
        let scale = json!([{"flag": "Web01", "instance_count": 9}]);
        assert_eq!(
            patch(&t, token, &formation, &scale).await.error(status),
            code
        );
        assert_eq!(
            t.post(&rollback, token, &json!({})).await.error(status),
            code
        );
        assert_eq!(t.get(&config, token).await.error(status), code);
        let set = json!({"X": "1"});
        assert_eq!(patch(&t, token, &config, &set).await.error(status), code);
    }
    assert_eq!(versions(&t, &owner, &id).await.len(), 2);
    // A deleted stack takes no more versions.
    let reply = t
        .send(
            Method::DELETE,
            &format!("/v3/alm/stack/{id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let scale = json!([{"flag": "Web01", "instance_count": 2}]);
    assert_eq!(
        patch(&t, &owner, &formation, &scale).await.error(409),
        "conflict"
    );
    // Its config vars are gone with it.
    assert_eq!(t.get(&config, &owner).await.error(404), "not_found");
    t.stop().await;
}
