//! Pools: created by admins, used by the users they list; a stack's
//! configurations resolve to a pool at apply and at every update.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{reference_v1, TestServer};

fn in_pool(pool: Option<&str>) -> Value {
    let mut body = reference_v1();
    if let Some(pool) = pool {
        body["configurations"][0]["provision"]["pool"] = json!(pool);
    }
    body
}

#[tokio::test]
async fn admins_manage_pools_and_users_see_only_theirs() {
    let t = TestServer::start().await;
    let admin = t.admin_token().await;
    let (_, _, bob) = t.user_in_no_pool("bob").await;

    // The built-in pool exists, empty on a new controller.
    let pools = t.get("/v3/alm/pools", &admin).await.json();
    assert_eq!(pools[0]["name"], "default");
    assert_eq!(pools[0]["users"], json!([]));

    // Only an admin creates pools.
    let body = json!({"name": "team-b", "users": ["bob"], "policy": {"host_paths": ["/srv/data"]}});
    let reply = t.post("/v3/alm/pools", &bob, &body).await;
    assert_eq!(reply.error(403), "forbidden");
    let reply = t.post("/v3/alm/pools", &admin, &body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let created = reply.json();
    assert_eq!(created["name"], "team-b");
    assert_eq!(created["users"], json!(["bob"]));
    assert_eq!(created["policy"]["host_paths"], json!(["/srv/data"]));
    assert_eq!(created["policy"]["allow_privileged"], false);
    assert_eq!(created["agents"], 0);
    assert_eq!(
        t.post("/v3/alm/pools", &admin, &body).await.error(409),
        "conflict"
    );
    for bad in [
        json!({"name": "Team B"}),
        json!({"name": ""}),
        json!({"users": ["bob"]}),
        json!({"name": "x", "users": ["no spaces"]}),
        json!({"name": "x", "policy": {"allow_everything": true}}),
        json!({"name": "x", "surprise": 1}),
    ] {
        let reply = t.post("/v3/alm/pools", &admin, &bad).await;
        assert_eq!(reply.error(400), reply.json()["errors"][0]["code"], "{bad}");
    }

    // Bob sees his pool and not the default one; a pool he is not in is a 404.
    let listed: Vec<Value> = t
        .get("/v3/alm/pools", &bob)
        .await
        .json()
        .as_array()
        .expect("list")
        .clone();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "team-b");
    assert_eq!(
        t.get("/v3/alm/pools/team-b", &bob).await.status,
        StatusCode::OK
    );
    assert_eq!(
        t.get("/v3/alm/pools/default", &bob).await.error(404),
        "not_found"
    );
    let reply = t
        .send(
            Method::PUT,
            "/v3/alm/pools/team-b",
            Some(&bob),
            Some(&json!({"users": []})),
        )
        .await;
    assert_eq!(reply.error(403), "forbidden");
    let reply = t
        .send(Method::DELETE, "/v3/alm/pools/team-b", Some(&bob), None)
        .await;
    assert_eq!(reply.error(403), "forbidden");
    // The built-in pool stays.
    let reply = t
        .send(Method::DELETE, "/v3/alm/pools/default", Some(&admin), None)
        .await;
    assert_eq!(reply.error(409), "conflict");
    t.stop().await;
}

#[tokio::test]
async fn a_configuration_resolves_to_a_pool_its_owner_may_use() {
    let t = TestServer::start().await;
    let admin = t.admin_token().await;
    let (_, _, bob) = t.user_in_no_pool("bob").await;
    let (_, _, carol) = t.user_in_no_pool("carol").await;
    for (name, users) in [
        ("team-a", json!(["carol"])),
        ("team-b", json!(["bob"])),
        ("team-c", json!(["bob"])),
    ] {
        let reply = t
            .post(
                "/v3/alm/pools",
                &admin,
                &json!({"name": name, "users": users}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    // A user in no pool cannot apply: nothing would ever run it.
    let (_, _, dave) = t.user_in_no_pool("dave").await;
    let reply = t.post("/v3/alm/template", &dave, &in_pool(None)).await;
    assert_eq!(reply.error(403), "forbidden");
    // Unknown pool: 409; a pool of someone else: 403; nothing stored.
    let reply = t
        .post("/v3/alm/template", &bob, &in_pool(Some("nope")))
        .await;
    assert_eq!(reply.error(409), "unknown_pool");
    assert_eq!(
        reply.json()["errors"][0]["context"]["path"],
        "/configurations/0/provision/pool"
    );
    let reply = t
        .post("/v3/alm/template", &bob, &in_pool(Some("team-a")))
        .await;
    assert_eq!(reply.error(403), "forbidden");
    let reply = t
        .post("/v3/alm/template", &bob, &in_pool(Some("default")))
        .await;
    assert_eq!(reply.error(403), "forbidden");
    let reply = t.post("/v3/alm/template", &bob, &in_pool(Some(""))).await;
    assert_eq!(reply.error(409), "unknown_pool");
    let mut wrong = in_pool(None);
    wrong["configurations"][0]["provision"]["pool"] = json!(7);
    assert_eq!(
        t.post("/v3/alm/template", &bob, &wrong).await.error(400),
        "invalid_template"
    );
    assert_eq!(t.get("/v3/alm/stack", &bob).await.json(), json!([]));

    // Without a name: the owner's first pool; with one: that pool.
    let (first, _) = t.apply(&bob, &in_pool(None)).await;
    let described = t.get(&format!("/v3/alm/stack/{first}"), &bob).await.json();
    assert_eq!(
        described["pools"],
        json!([{"flag": "Web01", "pool": "team-b"}])
    );
    let (second, _) = t.apply(&bob, &in_pool(Some("team-c"))).await;
    let described = t.get(&format!("/v3/alm/stack/{second}"), &bob).await.json();
    assert_eq!(described["pools"][0]["pool"], "team-c");
    // An admin's stack defaults to the built-in pool.
    let (admins, _) = t.apply(&admin, &in_pool(None)).await;
    let described = t
        .get(&format!("/v3/alm/stack/{admins}"), &admin)
        .await
        .json();
    assert_eq!(described["pools"][0]["pool"], "default");

    // No agent in the pool: the stack waits and says why, while in progress.
    let mut reason = Value::Null;
    for _ in 0..100 {
        let body = t.get(&format!("/v3/alm/stack/{first}"), &bob).await.json();
        if body["stack_status_reason"].is_string() {
            reason = body;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(reason["stack_status"], "CREATE_IN_PROGRESS");
    assert_eq!(
        reason["stack_status_reason"],
        "Web01: no connected agent in pool team-b with instance_type t2.micro"
    );

    // Updates resolve again, for the stack's owner even when an admin
    // updates it.
    let path = format!("/v3/alm/template/{first}");
    let reply = t
        .send(
            Method::PUT,
            &path,
            Some(&bob),
            Some(&in_pool(Some("team-a"))),
        )
        .await;
    assert_eq!(reply.error(403), "forbidden");
    let reply = t
        .send(
            Method::PUT,
            &path,
            Some(&admin),
            Some(&in_pool(Some("team-a"))),
        )
        .await;
    assert_eq!(
        reply.error(403),
        "forbidden",
        "bob may not use team-a, whoever updates"
    );
    let reply = t
        .send(
            Method::PUT,
            &path,
            Some(&bob),
            Some(&in_pool(Some("team-c"))),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let described = t.get(&format!("/v3/alm/stack/{first}"), &bob).await.json();
    assert_eq!(described["pools"][0]["pool"], "team-c");

    // Removing bob from team-c while his stacks run there is refused, and
    // names them; removing carol from team-a (no stacks) is fine.
    let reply = t
        .send(
            Method::PUT,
            "/v3/alm/pools/team-c",
            Some(&admin),
            Some(&json!({"users": []})),
        )
        .await;
    assert_eq!(reply.error(409), "conflict");
    let message = reply.json()["errors"].to_string();
    assert!(
        message.contains(&first) && message.contains(&second),
        "{message}"
    );
    assert_eq!(
        t.get("/v3/alm/pools/team-c", &admin).await.json()["users"],
        json!(["bob"]),
        "nothing changed"
    );
    let reply = t
        .send(
            Method::PUT,
            "/v3/alm/pools/team-a",
            Some(&admin),
            Some(&json!({"users": []})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let _ = carol;
    // A pool with stacks is not deleted; once they are gone, it is.
    let reply = t
        .send(Method::DELETE, "/v3/alm/pools/team-c", Some(&admin), None)
        .await;
    assert_eq!(reply.error(409), "conflict");
    for stack in [&first, &second] {
        let reply = t
            .send(
                Method::DELETE,
                &format!("/v3/alm/stack/{stack}"),
                Some(&bob),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    }
    let reply = t
        .send(Method::DELETE, "/v3/alm/pools/team-c", Some(&admin), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        t.get("/v3/alm/pools/team-c", &admin).await.error(404),
        "not_found"
    );
    t.stop().await;
}

fn with_container(container: Value) -> Value {
    json!({
        "version": "2017-03-03",
        "configurations": [{
            "role": "web", "flag": "Web01",
            "provision": {"instance_count": 1},
            "container": container
        }]
    })
}

#[tokio::test]
async fn containers_may_ask_only_what_their_pool_allows() {
    let t = TestServer::start().await;
    let admin = t.admin_token().await;
    let (_, _, bob) = t.user_in_no_pool("bob").await;
    let reply = t
        .post(
            "/v3/alm/pools",
            &admin,
            &json!({"name": "team-b", "users": ["bob"], "policy": {"host_paths": ["/srv/data"]}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);

    // Each attack is 403 policy_denied, naming the pointer and the pool;
    // nothing is stored.
    for (container, pointer) in [
        (
            json!({"image": "web", "volumes": ["/var/run/docker.sock:/var/run/docker.sock"]}),
            "/configurations/0/container/volumes/0",
        ),
        (
            json!({"image": "web", "volumes": ["/:/host"]}),
            "/configurations/0/container/volumes/0",
        ),
        (
            json!({"image": "web", "volumes": ["/srv/database:/db"]}),
            "/configurations/0/container/volumes/0",
        ),
        (
            json!({"image": "web", "volumes": ["/srv/data/../../etc:/etc2"]}),
            "/configurations/0/container/volumes/0",
        ),
        (
            json!({"image": "web", "network_mode": "host"}),
            "/configurations/0/container/network_mode",
        ),
        (
            json!({"image": "web", "privileged": true}),
            "/configurations/0/container/privileged",
        ),
        (
            json!({"image": "web", "cap_add": ["SYS_ADMIN"]}),
            "/configurations/0/container/cap_add/0",
        ),
        (
            json!({"image": "web", "pid_mode": "host"}),
            "/configurations/0/container/pid_mode",
        ),
        (
            json!({"image": "web", "devices": ["/dev/fuse"]}),
            "/configurations/0/container/devices/0",
        ),
        (
            json!({"image": "web", "security_opt": ["seccomp=unconfined"]}),
            "/configurations/0/container/security_opt/0",
        ),
    ] {
        let reply = t
            .post("/v3/alm/template", &bob, &with_container(container.clone()))
            .await;
        assert_eq!(reply.error(403), "policy_denied", "{container}");
        let first = &reply.json()["errors"][0];
        assert_eq!(first["context"]["path"], pointer, "{container}: {first}");
        assert_eq!(first["context"]["pool"], "team-b");
    }
    // Every violation is listed at once.
    let reply = t
        .post(
            "/v3/alm/template",
            &bob,
            &with_container(json!({"image": "web", "privileged": true, "network_mode": "host", "volumes": ["/etc:/e", "/srv/data/x:/x"]})),
        )
        .await;
    assert_eq!(reply.error(403), "policy_denied");
    assert_eq!(
        reply.json()["errors"].as_array().map(Vec::len),
        Some(3),
        "{}",
        reply.text
    );
    // Malformed is still 400, not 403.
    let reply = t
        .post(
            "/v3/alm/template",
            &bob,
            &with_container(json!({"image": "web", "network_mode": "everything"})),
        )
        .await;
    assert_eq!(reply.error(400), "invalid_template");
    assert_eq!(t.get("/v3/alm/stack", &bob).await.json(), json!([]));

    // What the pool allows passes: a bind below the allowed path, named volumes.
    let allowed = with_container(
        json!({"image": "web", "volumes": ["/srv/data/www:/www:ro", "cache:/cache"]}),
    );
    let (stack, _) = t.apply(&bob, &allowed).await;
    // An update is checked again.
    let reply = t
        .send(
            Method::PUT,
            &format!("/v3/alm/template/{stack}"),
            Some(&bob),
            Some(&with_container(
                json!({"image": "web", "volumes": ["/var/run/docker.sock:/s"]}),
            )),
        )
        .await;
    assert_eq!(reply.error(403), "policy_denied");

    // A pool change that would forbid what the stack uses is refused,
    // naming the stack; nothing changes.
    let reply = t
        .send(
            Method::PUT,
            "/v3/alm/pools/team-b",
            Some(&admin),
            Some(&json!({"users": ["bob"], "policy": {}})),
        )
        .await;
    assert_eq!(reply.error(409), "conflict");
    assert!(reply.text.contains(&stack), "{}", reply.text);
    let pool = t.get("/v3/alm/pools/team-b", &admin).await.json();
    assert_eq!(pool["policy"]["host_paths"], json!(["/srv/data"]));
    // A wider policy is fine; a policy with a relative path is a 400.
    let reply = t
        .send(
            Method::PUT,
            "/v3/alm/pools/team-b",
            Some(&admin),
            Some(&json!({"users": ["bob"], "policy": {"host_paths": ["/srv"]}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let reply = t
        .send(
            Method::PUT,
            "/v3/alm/pools/team-b",
            Some(&admin),
            Some(&json!({"users": ["bob"], "policy": {"host_paths": ["srv"]}})),
        )
        .await;
    assert_eq!(reply.error(400), "invalid_field");
    t.stop().await;
}
