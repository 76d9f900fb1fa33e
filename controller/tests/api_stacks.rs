//! Stacks (list, describe, delete) and the agent event endpoints.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use support::{container_template, reference_v1, reference_v2, TestServer};

#[tokio::test]
async fn stacks_are_described_with_the_reference_fields_by_get_and_post() {
    let t = TestServer::start().await;
    let (_, _, token) = t.user("thompson").await;
    let (id, _) = t.apply(&token, &reference_v1()).await;
    let v2 = t
        .send(
            Method::PUT,
            &format!("/v3/alm/template/{id}"),
            Some(&token),
            Some(&reference_v2()),
        )
        .await
        .json();
    // Described once the scheduler has said why the stack waits.
    support::wait_reason(&t, &token, &id).await;

    for method in [Method::GET, Method::POST] {
        let reply = t
            .send(
                method.clone(),
                &format!("/v3/alm/stack/{id}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{method} {}", reply.text);
        let stack = reply.json();
        // The reference's fields in its order, then Flotilla's: the pools,
        // whether an operator stopped it, and (while no agent can take it)
        // why the stack waits.
        let keys: Vec<&String> = stack
            .as_object()
            .expect("object")
            .keys()
            .filter(|k| *k != "stack_status_reason")
            .collect();
        assert_eq!(
            keys,
            [
                "auth_token",
                "user_id",
                "configuration",
                "nickname",
                "create_time",
                "username",
                "stack_id",
                "stack_status",
                "version_id",
                "pools",
                "stopped"
            ]
        );
        assert_eq!(stack["stopped"], false);
        assert_eq!(
            stack["pools"],
            json!([{"flag": "Web01", "pool": "default"}])
        );
        assert_eq!(stack["configuration"], reference_v2());
        assert_eq!(stack["username"], "thompson");
        assert_eq!(stack["stack_id"], id);
        assert_eq!(stack["version_id"], v2["version_id"]);
        assert_eq!(stack["stack_status"], "UPDATE_IN_PROGRESS");
        assert_eq!(stack["user_id"].as_str().map(str::len), Some(13));
        assert_eq!(stack["auth_token"].as_str().map(str::len), Some(28));
        assert_eq!(
            stack["nickname"]
                .as_str()
                .expect("nickname")
                .split(' ')
                .count(),
            3
        );
        let created = stack["create_time"].as_str().expect("time");
        assert!(
            chrono::DateTime::parse_from_rfc3339(created).is_ok(),
            "{created}"
        );

        let list = t.send(method, "/v3/alm/stack", Some(&token), None).await;
        assert_eq!(list.status, StatusCode::OK);
        assert_eq!(list.json(), json!([stack]));
    }
    assert_eq!(
        t.get("/v3/alm/stack/mo-nope-tk", &token).await.error(404),
        "not_found"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_stack_with_nothing_placed_deletes_at_once() {
    let t = TestServer::start().await;
    let token = t.admin_token().await;
    let (id, _) = t.apply(&token, &reference_v1()).await;
    let reply = t
        .send(
            Method::DELETE,
            &format!("/v3/alm/stack/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.json()["stack_status"], "DELETE_IN_PROGRESS");
    support::wait_status(&t, &token, &id, "DELETE_COMPLETE").await;

    // Deleting again is harmless; updating is refused; listing hides it unless asked.
    let again = t
        .send(
            Method::DELETE,
            &format!("/v3/alm/stack/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.json()["stack_status"], "DELETE_COMPLETE");
    let reply = t
        .send(
            Method::PUT,
            &format!("/v3/alm/template/{id}"),
            Some(&token),
            Some(&reference_v2()),
        )
        .await;
    assert_eq!(reply.error(409), "conflict");
    assert_eq!(t.get("/v3/alm/stack", &token).await.json(), json!([]));
    let all = t
        .get("/v3/alm/stack?include_deleted=true", &token)
        .await
        .json();
    assert_eq!(all[0]["stack_status"], "DELETE_COMPLETE");
    let events = t
        .get(&format!("/v3/events?stack_id={id}"), &token)
        .await
        .json();
    // Leaving out what the scheduler may have said while the stack waited
    // for an agent (a status event that keeps the status).
    let kinds: Vec<&str> = events
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] != "stack.status" || e["data"]["from"] != e["data"]["to"])
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    // Each operator action is followed by its audit entry.
    assert_eq!(
        kinds,
        [
            "stack.created",
            "audit",
            "stack.deleting",
            "audit",
            "stack.status"
        ]
    );
    t.stop().await;
}

#[tokio::test]
async fn a_stack_wanting_no_instances_completes() {
    let t = TestServer::start().await;
    let token = t.admin_token().await;
    let (id, _) = t.apply(&token, &container_template()).await;
    support::wait_status(&t, &token, &id, "CREATE_COMPLETE").await;
    let reply = t
        .send(
            Method::PUT,
            &format!("/v3/alm/template/{id}"),
            Some(&token),
            Some(&container_template()),
        )
        .await;
    assert_eq!(reply.json()["stack_status"], "UPDATE_IN_PROGRESS");
    support::wait_status(&t, &token, &id, "UPDATE_COMPLETE").await;
    // A stack that wants instances stays in progress: nothing runs them yet.
    let (waiting, _) = t.apply(&token, &reference_v1()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stack = t
        .get(&format!("/v3/alm/stack/{waiting}"), &token)
        .await
        .json();
    assert_eq!(stack["stack_status"], "CREATE_IN_PROGRESS");
    t.stop().await;
}

#[tokio::test]
async fn vm_events_are_accepted_with_the_stack_auth_token_and_recorded() {
    let t = TestServer::start().await;
    let token = t.admin_token().await;
    let (id, _) = t.apply(&token, &reference_v1()).await;
    let auth = t.get(&format!("/v3/alm/stack/{id}"), &token).await.json()["auth_token"]
        .as_str()
        .expect("auth_token")
        .to_owned();

    let reply = t
        .post(
            "/v3/event/spot/shutdown",
            &auth,
            &json!({"stack_id": id, "instance_id": "i-0abc"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.text, "");
    // A stack token reports statuses only for instances placed for its
    // stack (none here): refused, nothing stored. The owner's token may.
    let forged = t
        .post(
            "/v3/event/container/status",
            &auth,
            &json!({"stack_id": id, "instance_id": "i-0abc", "status": "running"}),
        )
        .await;
    assert_eq!(forged.error(404), "not_found");
    let statuses = ["starting", "running", "app-crashed"];
    for status in statuses {
        let reply = t
            .post(
                "/v3/event/container/status",
                &token,
                &json!({"stack_id": id, "instance_id": "i-0abc", "status": status}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    }
    // Form-encoded, with an operator token, with exit code and reason.
    let reply = t
        .raw(
            t.http
                .post(t.url("/v3/event/container/status"))
                .bearer_auth(&token)
                .form(&[
                    ("stack_id", id.as_str()),
                    ("instance_id", "i-0def"),
                    ("status", "terminated"),
                    ("exit_code", "137"),
                    ("reason", "OOMKilled"),
                ]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);

    let containers = t
        .get(&format!("/v3/alm/stack/{id}/containers"), &token)
        .await
        .json();
    assert_eq!(containers[0]["instance_id"], "i-0abc");
    assert_eq!(containers[0]["status"], "app-crashed");
    assert_eq!(containers[1]["instance_id"], "i-0def");
    assert_eq!(containers[1]["exit_code"], 137);
    assert_eq!(containers[1]["reason"], "OOMKilled");

    let spot = t
        .get(
            &format!("/v3/events?type=spot.shutdown&stack_id={id}"),
            &token,
        )
        .await
        .json();
    assert_eq!(spot.as_array().map(Vec::len), Some(1));
    assert_eq!(spot[0]["instance_id"], "i-0abc");
    let status = t
        .get(
            "/v3/events?type=container.status&instance_id=i-0abc",
            &token,
        )
        .await
        .json();
    let seen: Vec<&str> = status
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["data"]["status"].as_str().expect("s"))
        .collect();
    assert_eq!(seen, statuses);
    let after = status[0]["id"].as_u64().expect("id");
    let later = t
        .get(
            &format!("/v3/events?type=container.status&instance_id=i-0abc&since={after}"),
            &token,
        )
        .await
        .json();
    assert_eq!(later.as_array().map(Vec::len), Some(2));

    // Refusals: unknown status, bad instance id, wrong secret, unknown stack, no token.
    let bad_status = t
        .post(
            "/v3/event/container/status",
            &auth,
            &json!({"stack_id": id, "instance_id": "i-1", "status": "exploded"}),
        )
        .await;
    assert_eq!(bad_status.error(400), "invalid_field");
    assert!(
        bad_status.text.contains("probe-failure"),
        "lists the valid values: {}",
        bad_status.text
    );
    let bad_instance = t
        .post(
            "/v3/event/spot/shutdown",
            &auth,
            &json!({"stack_id": id, "instance_id": "i 1/.."}),
        )
        .await;
    assert_eq!(bad_instance.error(400), "invalid_field");
    let wrong = t
        .post(
            "/v3/event/spot/shutdown",
            "wrong-secret",
            &json!({"stack_id": id, "instance_id": "i-1"}),
        )
        .await;
    assert_eq!(wrong.error(401), "unauthorized");
    let unknown = t
        .post(
            "/v3/event/spot/shutdown",
            &token,
            &json!({"stack_id": "mo-x-tk", "instance_id": "i-1"}),
        )
        .await;
    assert_eq!(unknown.error(404), "not_found");
    let unknown_anon = t
        .post(
            "/v3/event/spot/shutdown",
            &auth,
            &json!({"stack_id": "mo-x-tk", "instance_id": "i-1"}),
        )
        .await;
    assert_eq!(
        unknown_anon.error(403),
        "forbidden",
        "answers as for another existing stack"
    );
    let none = t
        .send(
            Method::POST,
            "/v3/event/spot/shutdown",
            None,
            Some(&json!({"stack_id": id, "instance_id": "i-1"})),
        )
        .await;
    assert_eq!(none.error(401), "unauthorized");
    let missing = t
        .post(
            "/v3/event/container/status",
            &auth,
            &json!({"stack_id": id, "instance_id": "i-1"}),
        )
        .await;
    assert_eq!(missing.error(400), "invalid_field");
    // None of the refusals was recorded.
    let all = t
        .get(
            &format!("/v3/events?stack_id={id}&type=container.status"),
            &token,
        )
        .await
        .json();
    assert_eq!(all.as_array().map(Vec::len), Some(4));
    t.stop().await;
}
