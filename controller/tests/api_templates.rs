//! Templates: apply, update, versions, describe, compare, container config.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{container_template, reference_v1, reference_v2, TestServer};

fn keys(value: &Value) -> Vec<String> {
    value.as_object().expect("object").keys().cloned().collect()
}

#[tokio::test]
async fn apply_and_update_answer_as_the_reference_does() {
    let t = TestServer::start().await;
    let token = t.admin_token().await;
    let reply = t.post("/v3/alm/template", &token, &reference_v1()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let created = reply.json();
    assert_eq!(
        keys(&created),
        [
            "status",
            "stack_status",
            "template_id",
            "version_id",
            "task_id"
        ]
    );
    assert_eq!(created["status"], "success");
    assert_eq!(created["stack_status"], "CREATE_IN_PROGRESS");
    let template_id = created["template_id"].as_str().expect("id");
    assert!(
        template_id.starts_with("mo-") && template_id.ends_with("-tk"),
        "{template_id}"
    );
    assert_eq!(created["version_id"].as_str().map(str::len), Some(32));

    // The update tries to change the vendor; the stack keeps its own.
    let mut v2 = reference_v2();
    v2["vendor"] = json!({"gcp": {"project": "elsewhere"}});
    let reply = t
        .send(
            Method::PUT,
            &format!("/v3/alm/template/{template_id}"),
            Some(&token),
            Some(&v2),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let updated = reply.json();
    assert_eq!(
        keys(&updated),
        [
            "status",
            "stack_status",
            "template_id",
            "version_id",
            "task_id"
        ]
    );
    assert_eq!(updated["stack_status"], "UPDATE_IN_PROGRESS");
    assert_eq!(updated["template_id"], template_id);
    assert_ne!(updated["version_id"], created["version_id"]);
    let body = t
        .get(&format!("/v3/alm/template/{template_id}"), &token)
        .await
        .json();
    assert_eq!(body["vendor"], reference_v1()["vendor"]);
    assert_eq!(body["label"], "template version label #2");
    t.stop().await;
}

#[tokio::test]
async fn versions_are_listed_newest_first_and_stay_immutable() {
    let t = TestServer::start().await;
    let token = t.admin_token().await;
    let (id, v1) = t.apply(&token, &reference_v1()).await;
    let v2 = t
        .send(
            Method::PUT,
            &format!("/v3/alm/template/{id}"),
            Some(&token),
            Some(&reference_v2()),
        )
        .await
        .json()["version_id"]
        .as_str()
        .expect("v2")
        .to_owned();
    let mut v3_body = reference_v2();
    v3_body["label"] = json!("third");
    let v3 = t
        .send(
            Method::PUT,
            &format!("/v3/alm/template/{id}"),
            Some(&token),
            Some(&v3_body),
        )
        .await
        .json()["version_id"]
        .as_str()
        .expect("v3")
        .to_owned();

    let list = t
        .get(&format!("/v3/alm/template?template_id={id}"), &token)
        .await;
    assert_eq!(list.status, StatusCode::OK);
    let list = list.json();
    let list = list.as_array().expect("array");
    let ids: Vec<&str> = list
        .iter()
        .map(|v| v["version_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [v3.as_str(), v2.as_str(), v1.as_str()]);
    let latest: Vec<bool> = list
        .iter()
        .map(|v| v["latest"].as_bool().expect("bool"))
        .collect();
    assert_eq!(latest, [true, false, false]);
    for entry in list {
        assert_eq!(
            keys(entry),
            ["version_id", "latest", "last_modified", "size"]
        );
        let modified = entry["last_modified"].as_str().expect("time");
        assert_eq!(
            modified.len(),
            "2017-08-25T10:40:29.000Z".len(),
            "{modified}"
        );
        assert!(
            modified.ends_with('Z') && modified.as_bytes()[19] == b'.',
            "{modified}"
        );
        // size is the byte length of the stored body, as a string.
        let version = entry["version_id"].as_str().expect("id");
        let body = t
            .get(
                &format!("/v3/alm/template/{id}?version_id={version}"),
                &token,
            )
            .await;
        assert_eq!(entry["size"], body.text.len().to_string());
    }

    // Each version still returns its own body.
    let first = t
        .get(&format!("/v3/alm/template/{id}?version_id={v1}"), &token)
        .await
        .json();
    assert_eq!(first, reference_v1());
    let second = t
        .get(&format!("/v3/alm/template/{id}?version_id={v2}"), &token)
        .await
        .json();
    assert_eq!(second, reference_v2());
    for latest in ["", "?version_id=", "?version_id=latest"] {
        let body = t
            .get(&format!("/v3/alm/template/{id}{latest}"), &token)
            .await
            .json();
        assert_eq!(body["label"], "third", "{latest}");
    }
    let reply = t
        .get(&format!("/v3/alm/template/{id}?version_id=nope"), &token)
        .await;
    assert_eq!(reply.error(404), "not_found");
    assert_eq!(
        t.get("/v3/alm/template/mo-unknown-tk", &token)
            .await
            .error(404),
        "not_found"
    );
    assert_eq!(
        t.get("/v3/alm/template?template_id=mo-unknown-tk", &token)
            .await
            .error(404),
        "not_found"
    );
    assert_eq!(
        t.get("/v3/alm/template", &token).await.error(400),
        "invalid_query"
    );
    t.stop().await;
}

#[tokio::test]
async fn compare_reproduces_the_reference_example() {
    let t = TestServer::start().await;
    let token = t.admin_token().await;
    let (id, v1) = t.apply(&token, &reference_v1()).await;
    let v2 = t
        .send(
            Method::PUT,
            &format!("/v3/alm/template/{id}"),
            Some(&token),
            Some(&reference_v2()),
        )
        .await
        .json()["version_id"]
        .as_str()
        .expect("v2")
        .to_owned();
    let want_diff: Value = serde_json::from_str(
        r#"{
            "new": [],
            "removed": {"configurations\/1\/provision\/volume_type": "${computed}"},
            "edited": {
              "label": {"oldvalue": "template version label #1", "newvalue": "template version label #2"},
              "configurations\/provision\/instance_type": {"oldvalue": "t2.micro", "newvalue": "m3.medium"},
              "configurations\/provision\/instance_count": {"oldvalue": 1, "newvalue": 2}
            }
        }"#,
    )
    .expect("reference diff");

    let by_id = json!({"id": [{id.clone(): {"version": v1}}, {id.clone(): {"version": v2}}]});
    let reply = t.post("/v3/alm/template/compare", &token, &by_id).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let body = reply.json();
    assert_eq!(keys(&body), ["status", "source", "target", "diff"]);
    assert_eq!(body["status"], "success");
    assert_eq!(body["source"], reference_v1());
    assert_eq!(body["target"], reference_v2());
    assert_eq!(body["diff"], want_diff);

    // The same from bodies, as objects and as JSON strings.
    let by_body = json!({"body": [reference_v1(), reference_v2().to_string()]});
    let reply = t.post("/v3/alm/template/compare", &token, &by_body).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.json()["diff"], want_diff);

    let bad = [
        (json!({}), 400),
        (json!({"id": [], "body": []}), 400),
        (json!({"id": [{id.clone(): {"version": "latest"}}]}), 400),
        (json!({"body": [reference_v1(), 3]}), 400),
        (json!({"body": [reference_v1(), "{not json"]}), 400),
        (
            json!({"id": [{id.clone(): {"version": "nope"}}, {id.clone(): {}}]}),
            404,
        ),
        (json!({"id": [{"a": {}, "b": {}}, {id.clone(): {}}]}), 400),
        (json!({"id": "x"}), 400),
    ];
    for (request, status) in bad {
        t.post("/v3/alm/template/compare", &token, &request)
            .await
            .error(status);
    }
    t.stop().await;
}

#[tokio::test]
async fn the_container_section_is_served_by_flag() {
    let t = TestServer::start().await;
    let token = t.admin_token().await;
    let (id, _) = t.apply(&token, &container_template()).await;
    let reply = t
        .get(
            &format!("/v3/alm/template/{id}/container?flag=Web01"),
            &token,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let body = reply.json();
    assert_eq!(
        keys(&body),
        [
            "image",
            "environment_variables",
            "gitReference",
            "gitPrivateKey",
            "gitRepo",
            "updated"
        ]
    );
    assert_eq!(
        body["image"],
        "registry.mobingi.com/mobingi/ubuntu-apache2-php5"
    );
    assert_eq!(body["environment_variables"]["Stage"], "_development");
    let updated = body["updated"].as_i64().expect("unix time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!((now - updated).abs() < 60, "{updated} vs {now}");

    assert_eq!(
        t.get(
            &format!("/v3/alm/template/{id}/container?flag=Nope"),
            &token
        )
        .await
        .error(404),
        "not_found"
    );
    assert_eq!(
        t.get(&format!("/v3/alm/template/{id}/container"), &token)
            .await
            .error(400),
        "invalid_query"
    );
    let (plain, _) = t.apply(&token, &reference_v1()).await;
    assert_eq!(
        t.get(
            &format!("/v3/alm/template/{plain}/container?flag=Web01"),
            &token
        )
        .await
        .error(404),
        "not_found"
    );
    t.stop().await;
}

#[tokio::test]
async fn invalid_templates_list_every_problem_and_store_nothing() {
    let t = TestServer::start().await;
    let token = t.admin_token().await;
    let bad = json!({
        "label": ["not", "a", "string"],
        "configurations": [
            {"role": "web", "flag": "Web01", "provision": {"instance_count": -1}, "container": {"environment_variables": {"1X": "y"}}},
            {"role": "web", "flag": "Web01", "provision": {"instance_count": 1}}
        ]
    });
    let reply = t.post("/v3/alm/template", &token, &bad).await;
    assert_eq!(reply.error(400), "invalid_template");
    let paths: Vec<String> = reply.json()["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["context"]["path"].as_str().expect("path").to_owned())
        .collect();
    assert_eq!(
        paths,
        [
            "/version",
            "/label",
            "/configurations/0/provision/instance_count",
            "/configurations/0/container/image",
            "/configurations/0/container/environment_variables/1X",
            "/configurations/1/flag",
        ]
    );
    assert_eq!(
        t.get("/v3/alm/stack?include_deleted=true", &token)
            .await
            .json(),
        json!([])
    );

    // An invalid update leaves the versions as they were.
    let (id, _) = t.apply(&token, &reference_v1()).await;
    let reply = t
        .send(
            Method::PUT,
            &format!("/v3/alm/template/{id}"),
            Some(&token),
            Some(&json!({"version": 1})),
        )
        .await;
    assert_eq!(reply.error(400), "invalid_template");
    let versions = t
        .get(&format!("/v3/alm/template?template_id={id}"), &token)
        .await
        .json();
    assert_eq!(versions.as_array().map(Vec::len), Some(1));
    let stack = t.get(&format!("/v3/alm/stack/{id}"), &token).await.json();
    assert_eq!(stack["stack_status"], "CREATE_IN_PROGRESS");
    t.stop().await;
}

#[tokio::test]
async fn unknown_fields_are_kept_in_order() {
    let t = TestServer::start().await;
    let token = t.admin_token().await;
    let mut template = container_template();
    template["x-team"] = json!({"owner": "payments", "cost_center": 42});
    template["configurations"][0]["container"]["x-extra"] = json!([1, 2, 3]);
    let (id, _) = t.apply(&token, &template).await;
    let stored = t.get(&format!("/v3/alm/template/{id}"), &token).await;
    assert_eq!(stored.json(), template);
    assert_eq!(
        stored.text,
        template.to_string(),
        "stored byte for byte, keys in the order given"
    );
    t.stop().await;
}

/// The pointers of a 400 answer's problems.
fn problem_paths(reply: &support::Reply) -> Vec<String> {
    reply.json()["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["context"]["path"].as_str().expect("path").to_owned())
        .collect()
}

/// A 400 `invalid_template` with the one problem at `path`.
fn assert_refused(reply: &support::Reply, field: &str, path: &str) {
    assert_eq!(
        reply.error(400),
        "invalid_template",
        "{field}: {}",
        reply.text
    );
    assert_eq!(problem_paths(reply), [path], "{field}");
}

/// `container_template()` with `field` of its container section set.
fn with_container(field: &str, value: Value) -> Value {
    let mut template = container_template();
    template["configurations"][0]["container"][field] = value;
    template
}

#[tokio::test]
async fn container_sections_agents_cannot_run_are_refused_at_apply_and_update() {
    let t = TestServer::start().await;
    let token = t.admin_token().await;
    let cases = [
        (
            "ports",
            json!(["abc"]),
            "/configurations/0/container/ports/0",
        ),
        (
            "stop_grace_period",
            json!(1e20),
            "/configurations/0/container/stop_grace_period",
        ),
        ("memory", json!("1k"), "/configurations/0/container/memory"),
        (
            "gitRepo",
            json!("/srv/site.git"),
            "/configurations/0/container/gitRepo",
        ),
        (
            "gitRepo",
            json!("file:///srv/site.git"),
            "/configurations/0/container/gitRepo",
        ),
        (
            "cap_add",
            json!(["NET_ADMIN", "EVERYTHING"]),
            "/configurations/0/container/cap_add/1",
        ),
        (
            "volumes",
            json!(["relative:path"]),
            "/configurations/0/container/volumes/0",
        ),
        (
            "network_mode",
            json!("container:other"),
            "/configurations/0/container/network_mode",
        ),
    ];
    for (field, value, path) in &cases {
        let reply = t
            .post(
                "/v3/alm/template",
                &token,
                &with_container(field, value.clone()),
            )
            .await;
        assert_refused(&reply, field, path);
    }
    assert_eq!(
        t.get("/v3/alm/stack?include_deleted=true", &token)
            .await
            .json(),
        json!([]),
        "nothing was stored"
    );

    // The same on update: refused, and the versions stay as they were.
    let (id, _) = t.apply(&token, &container_template()).await;
    for (field, value, path) in &cases {
        let reply = t
            .send(
                Method::PUT,
                &format!("/v3/alm/template/{id}"),
                Some(&token),
                Some(&with_container(field, value.clone())),
            )
            .await;
        assert_refused(&reply, field, path);
    }
    let versions = t
        .get(&format!("/v3/alm/template?template_id={id}"), &token)
        .await
        .json();
    assert_eq!(versions.as_array().map(Vec::len), Some(1));

    // Every problem of one section at once.
    let mut template = with_container("ports", json!(["abc", 80, "1:2:3:4"]));
    template["configurations"][0]["container"]["stop_grace_period"] = json!(1e20);
    let reply = t.post("/v3/alm/template", &token, &template).await;
    assert_eq!(
        problem_paths(&reply),
        [
            "/configurations/0/container/ports/0",
            "/configurations/0/container/ports/2",
            "/configurations/0/container/stop_grace_period",
        ]
    );
    t.stop().await;
}

#[tokio::test]
async fn well_formed_host_access_fields_and_computed_placeholders_are_accepted() {
    let t = TestServer::start().await;
    let token = t.admin_token().await;
    let mut template = container_template();
    let container = &mut template["configurations"][0]["container"];
    container["volumes"] = json!(["/srv/data:/data:ro", "cache:/cache"]);
    container["cap_add"] = json!(["CAP_NET_ADMIN"]);
    container["network_mode"] = json!("host");
    container["pid_mode"] = json!("host");
    container["devices"] = json!(["/dev/fuse"]);
    container["stop_grace_period"] = json!("10s");
    // Well formed, but the built-in pool allows none of it (default deny).
    let reply = t.post("/v3/alm/template", &token, &template).await;
    assert_eq!(reply.error(403), "policy_denied");
    let policy = json!({"host_paths": ["/srv/data"], "allow_cap_add": ["NET_ADMIN"],
        "allow_host_network": true, "allow_host_pid_ipc": true, "allow_devices": true});
    let reply = t
        .send(
            reqwest::Method::PUT,
            "/v3/alm/pools/default",
            Some(&token),
            Some(&json!({"users": [], "policy": policy})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let reply = t.post("/v3/alm/template", &token, &template).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let mut computed = container_template();
    computed["configurations"][0]["container"]["image"] = json!("${computed}");
    let reply = t.post("/v3/alm/template", &token, &computed).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    t.stop().await;
}

#[tokio::test]
async fn container_sections_past_the_limit_are_refused_and_name_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = support::config_for(dir.path());
    config.max_container_section = 8 * 1024;
    let t = TestServer::start_with(dir, config).await;
    let token = t.admin_token().await;
    let big = "x".repeat(3 * 1024);
    let mut template = container_template();
    template["configurations"][0]["container"]["environment_variables"] =
        json!({"A": big, "B": big, "C": big});
    let reply = t.post("/v3/alm/template", &token, &template).await;
    assert_eq!(reply.error(403), "container_section_too_large");
    let error = &reply.json()["errors"][0];
    assert_eq!(error["context"]["path"], "/configurations/0/container");
    assert_eq!(error["context"]["limit"], 8192);
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 8192") && m.contains("max_container_section")),
        "{error}"
    );
    assert_eq!(t.get("/v3/alm/stack", &token).await.json(), json!([]));
    // Within the limit: accepted; an update past it is refused the same way.
    template["configurations"][0]["container"]["environment_variables"] = json!({"A": big});
    let (stack, _) = t.apply(&token, &template).await;
    template["configurations"][0]["container"]["environment_variables"] =
        json!({"A": big, "B": big, "C": big});
    let reply = t
        .send(
            reqwest::Method::PUT,
            &format!("/v3/alm/template/{stack}"),
            Some(&token),
            Some(&template),
        )
        .await;
    assert_eq!(reply.error(403), "container_section_too_large");
    t.stop().await;
}
