//! Tasks: every 201/202 of apply, update, scale, rollback, config and
//! delete carries a `task_id`; the task settles with its stack (SUCCESS),
//! or fails with the reason (the stack failed, was deleted, or a later
//! version superseded it). Tasks are their stacks' owners' only.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use support::{config_for, reference_v1, TestServer};

/// A stack that needs no agent: it completes at once.
fn nothing_to_place() -> Value {
    json!({"version": "1", "configurations": [
        {"role": "web", "flag": "Web01", "provision": {"instance_count": 0},
         "container": {"image": "web", "environment_variables": {"A": "1"}}}
    ]})
}

async fn task(t: &TestServer, token: &str, id: &str) -> Value {
    let reply = t.get(&format!("/v3/tasks/{id}"), token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json()
}

/// Polls a task until it is no longer PENDING (10 s at most).
async fn settled(t: &TestServer, token: &str, id: &str) -> Value {
    for _ in 0..200 {
        let task = task(t, token, id).await;
        if task["taskStatus"] != "PENDING" {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("task {id} never settled");
}

/// Deletes a stack.
async fn delete(t: &TestServer, token: &str, stack: &str) -> support::Reply {
    let path = format!("/v3/alm/stack/{stack}");
    t.send(Method::DELETE, &path, Some(token), None).await
}

/// Updates a stack.
async fn put(t: &TestServer, token: &str, stack: &str, body: &Value) -> support::Reply {
    let path = format!("/v3/alm/template/{stack}");
    t.send(Method::PUT, &path, Some(token), Some(body)).await
}

fn task_id(reply: &support::Reply) -> String {
    assert!(reply.status.is_success(), "{}", reply.text);
    reply.json()["task_id"]
        .as_str()
        .expect("task_id")
        .to_owned()
}

#[tokio::test]
async fn tasks_succeed_when_the_stack_settles_on_their_version() {
    let t = TestServer::start().await;
    let (_, _, token) = t.user("tasker").await;
    let applied = t
        .post("/v3/alm/template", &token, &nothing_to_place())
        .await;
    assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.text);
    let created = applied.json();
    let apply_task = task_id(&applied);
    let stack = created["template_id"].as_str().expect("id").to_owned();

    let done = settled(&t, &token, &apply_task).await;
    assert_eq!(done["taskStatus"], "SUCCESS", "{done}");
    assert_eq!(done["operation"], "apply");
    assert_eq!(done["stack_id"], stack);
    assert_eq!(done["version_id"], created["version_id"]);
    assert!(
        done["finished"].is_string() && done["reason"].is_null(),
        "{done}"
    );
    let keys: Vec<&String> = done.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        [
            "taskId",
            "taskStatus",
            "operation",
            "stack_id",
            "version_id",
            "reason",
            "created",
            "finished"
        ]
    );

    // Each operation answers with its own task, which settles the same way.
    let path = format!("/v3/alm/template/{stack}");
    let update = t
        .send(Method::PUT, &path, Some(&token), Some(&nothing_to_place()))
        .await;
    let config = t
        .send(
            Method::PATCH,
            &format!("/v3/alm/stack/{stack}/config/Web01"),
            Some(&token),
            Some(&json!({"B": "2"})),
        )
        .await;
    let update_task = task_id(&update);
    let config_task = task_id(&config);
    // The update was superseded by the config change before it settled,
    // or settled first: either way it says so.
    let update_done = settled(&t, &token, &update_task).await;
    match update_done["taskStatus"].as_str() {
        Some("SUCCESS") => {}
        Some("FAILED") => assert_eq!(
            update_done["reason"],
            format!(
                "superseded by version {} (config)",
                config.json()["version_id"].as_str().unwrap_or_default()
            )
        ),
        other => panic!("{other:?}: {update_done}"),
    }
    assert_eq!(
        settled(&t, &token, &config_task).await["taskStatus"],
        "SUCCESS"
    );
    let rollback = t
        .post(
            &format!("/v3/alm/template/{stack}/rollback"),
            &token,
            &json!({}),
        )
        .await;
    let rollback_done = settled(&t, &token, &task_id(&rollback)).await;
    assert_eq!(rollback_done["taskStatus"], "SUCCESS");
    assert_eq!(rollback_done["operation"], "rollback");

    // A delete's task succeeds once the stack is gone.
    let deleted = delete(&t, &token, &stack).await;
    let delete_task = task_id(&deleted);
    let done = settled(&t, &token, &delete_task).await;
    assert_eq!(done["taskStatus"], "SUCCESS", "{done}");
    assert_eq!(done["operation"], "delete");
    assert!(done["version_id"].is_null());
    // Deleting again names a task too.
    let again = delete(&t, &token, &stack).await;
    assert_eq!(
        settled(&t, &token, &task_id(&again)).await["taskStatus"],
        "SUCCESS"
    );
    t.stop().await;
}

#[tokio::test]
async fn tasks_fail_with_the_reason() {
    let dir = tempfile::tempdir().expect("dir");
    let mut config = config_for(dir.path());
    config.fleet.placement_timeout = Duration::from_millis(300);
    let t = TestServer::start_with(dir, config).await;
    let admin = t.admin_token().await;
    // No agent has an instance type t2.micro: the stack fails.
    let applied = t.post("/v3/alm/template", &admin, &reference_v1()).await;
    let failing = task_id(&applied);
    let stack = applied.json()["template_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let failed = settled(&t, &admin, &failing).await;
    assert_eq!(failed["taskStatus"], "FAILED", "{failed}");
    let reason = failed["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("the stack is CREATE_FAILED: "),
        "{reason}"
    );

    // A version still rolling out when a later one comes is superseded.
    let mut waiting = reference_v1();
    waiting["configurations"][0]["provision"]["instance_count"] = json!(1);
    let first = put(&t, &admin, &stack, &waiting).await;
    let second = put(&t, &admin, &stack, &waiting).await;
    let superseded = settled(&t, &admin, &task_id(&first)).await;
    let second_version = second.json()["version_id"].as_str().expect("v").to_owned();
    assert_eq!(superseded["taskStatus"], "FAILED");
    assert_eq!(
        superseded["reason"],
        format!("superseded by version {second_version} (update)")
    );
    // A delete ends the tasks still pending.
    let third = put(&t, &admin, &stack, &waiting).await;
    let third_task = task_id(&third);
    delete(&t, &admin, &stack).await;
    let ended = settled(&t, &admin, &third_task).await;
    assert_eq!(ended["taskStatus"], "FAILED");
    assert!(
        ended["reason"] == "the stack is being deleted"
            || ended["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("the stack is UPDATE_FAILED")),
        "{ended}"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_task_is_its_stack_owners_only() {
    let t = TestServer::start().await;
    let (_, _, owner) = t.user("owner").await;
    let (_, _, other) = t.user("other").await;
    let applied = t
        .post("/v3/alm/template", &owner, &nothing_to_place())
        .await;
    let id = task_id(&applied);
    let stack = applied.json()["template_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        t.get(&format!("/v3/tasks/{id}"), &other).await.error(404),
        "not_found"
    );
    assert_eq!(
        t.get("/v3/tasks/task-nope", &owner).await.error(404),
        "not_found"
    );
    let admin = t.admin_token().await;
    assert_eq!(task(&t, &admin, &id).await["stack_id"], stack);
    let auth_token = t
        .get(&format!("/v3/alm/stack/{stack}"), &owner)
        .await
        .json()["auth_token"]
        .as_str()
        .expect("auth_token")
        .to_owned();
    let stack_token = t.token_for(&stack, &auth_token).await;
    assert_eq!(
        t.get(&format!("/v3/tasks/{id}"), &stack_token)
            .await
            .error(403),
        "forbidden"
    );
    t.stop().await;
}
