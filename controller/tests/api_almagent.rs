//! The original Go alm-agent's HTTP calls, replayed as it makes them:
//! form-encoded token request with the stack's credentials, then
//! `Authorization: <token_type> <token>`.

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::TestServer;

fn template() -> Value {
    json!({
        "version": "2017-03-03",
        "configurations": [{
            "role": "web", "flag": "Web01",
            "provision": {"instance_count": 1},
            "container": {
                "image": "registry.example:5000/shop/web:1",
                "registry": {"username": "deploy", "password": "registry-pass"},
                "codeDir": "/srv/app",
                "gitRepo": "git@example.com:shop/web.git",
                "gitReference": "release",
                "gitPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n",
                "ports": ["8080:80/tcp", 443],
                "environment_variables": {"STAGE": "production", "WORKERS": 4}
            }
        }]
    })
}

#[tokio::test]
async fn the_alm_agent_requests_are_answered_as_mobingi_did() {
    let t = TestServer::start().await;
    let admin = t.admin_token().await;
    let (stack, _) = t.apply(&admin, &template()).await;
    let (other, _) = t.apply(&admin, &template()).await;
    let auth_token = t
        .get(&format!("/v3/alm/stack/{stack}"), &admin)
        .await
        .json()["auth_token"]
        .as_str()
        .expect("auth_token")
        .to_owned();

    // Token request, form-encoded, with the stack's id and auth_token.
    let reply = t
        .raw(t.http.post(t.url("/v3/access_token")).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", stack.as_str()),
            ("client_secret", auth_token.as_str()),
        ]))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let token = reply.json();
    let authorization = format!(
        "{} {}",
        token["token_type"].as_str().expect("type"),
        token["access_token"].as_str().expect("token")
    );

    // Config by flag, in the alm-agent's keys.
    let reply = t
        .raw(
            t.http
                .get(t.url(&format!("/v3/alm/agent/config?stack_id={stack}&flag=Web01")))
                .header("Authorization", &authorization),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let config = reply.json();
    let keys: Vec<&String> = config.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        [
            "container_image",
            "container_registry_username",
            "container_registry_password",
            "container_code_dir",
            "container_git_repo",
            "container_git_reference",
            "container_git_private_key",
            "container_ports",
            "container_updated",
            "container_env_vars"
        ]
    );
    assert_eq!(
        config["container_image"],
        "registry.example:5000/shop/web:1"
    );
    assert_eq!(config["container_registry_username"], "deploy");
    assert_eq!(config["container_registry_password"], "registry-pass");
    assert_eq!(config["container_code_dir"], "/srv/app");
    assert_eq!(config["container_git_repo"], "git@example.com:shop/web.git");
    assert_eq!(config["container_git_reference"], "release");
    assert!(config["container_git_private_key"]
        .as_str()
        .is_some_and(|k| k.contains("OPENSSH")));
    assert_eq!(config["container_ports"], json!([80, 443]));
    assert!(config["container_updated"]
        .as_i64()
        .is_some_and(|t| t > 1_700_000_000));
    assert_eq!(
        config["container_env_vars"],
        json!({"STAGE": "production", "WORKERS": "4"})
    );

    // An unknown flag: {} as Mobingi answered.
    let reply = t
        .raw(
            t.http
                .get(t.url(&format!("/v3/alm/agent/config?stack_id={stack}&flag=Nope")))
                .header("Authorization", &authorization),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({}));
    // Another stack's config is not this stack's to read.
    let reply = t
        .raw(
            t.http
                .get(t.url(&format!("/v3/alm/agent/config?stack_id={other}&flag=Web01")))
                .header("Authorization", &authorization),
        )
        .await;
    assert_eq!(reply.error(404), "not_found");

    // Before every config read: temporary cloud credentials for its logs
    // (`url.Values` encodes keys in order). Flotilla issues none: 200 with
    // the fields empty, so the agent goes on.
    let reply = t
        .raw(
            t.http
                .get(t.url(&format!("/v3/alm/sts?service=logs&stack_id={stack}")))
                .header("Authorization", &authorization),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json(),
        json!({"AccessKeyID": "", "SecretAccessKey": "", "SessionToken": "", "Expiration": ""})
    );
    let reply = t
        .raw(
            t.http
                .get(t.url(&format!("/v3/alm/sts?service=logs&stack_id={other}")))
                .header("Authorization", &authorization),
        )
        .await;
    assert_eq!(reply.error(404), "not_found");

    // Status reports, exactly as its `api` package sends them: form-encoded,
    // keys in order, `message` only when set, `instance_id` only when the
    // VM has one; the container report also carries `container_id`. It
    // counts a report delivered only on 200 with a JSON body.
    let agent_status = [
        ("agent_id", "alm-agent-7"),
        ("instance_id", "i-0legacy"),
        ("message", "alm-agent 0.3.1 started"),
        ("stack_id", stack.as_str()),
        ("status", "running"),
    ];
    let starting = [
        ("agent_id", "alm-agent-7"),
        ("container_id", "i-0legacy"),
        ("instance_id", "i-0legacy"),
        ("stack_id", stack.as_str()),
        ("status", "starting"),
    ];
    let running = [
        ("agent_id", "alm-agent-7"),
        ("container_id", "i-0legacy"),
        ("instance_id", "i-0legacy"),
        ("stack_id", stack.as_str()),
        ("status", "running"),
    ];
    for (path, form) in [
        ("/v3/alm/agent/agent_status", &agent_status[..]),
        ("/v3/alm/agent/container_status", &starting[..]),
        ("/v3/alm/agent/container_status", &running[..]),
    ] {
        let reply = t
            .raw(
                t.http
                    .post(t.url(path))
                    .header("Authorization", &authorization)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(serde_urlencoded::to_string(form).expect("form")),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
        assert_eq!(reply.json(), json!({}), "{path}");
    }
    let containers = t
        .get(&format!("/v3/alm/stack/{stack}/containers"), &admin)
        .await
        .json();
    assert_eq!(containers[0]["instance_id"], "i-0legacy");
    assert_eq!(containers[0]["status"], "running");
    assert_eq!(containers[0]["reason"], Value::Null);
    assert_eq!(containers[0]["source"], "alm-agent");
    let events = t
        .get(
            &format!("/v3/events?stack_id={stack}&type=agent.status"),
            &admin,
        )
        .await
        .json();
    assert_eq!(events[0]["data"]["message"], "alm-agent 0.3.1 started");

    // A VM without a metadata service leaves `instance_id` out (and sends
    // an empty `container_id`): recorded against its `agent_id`, as no
    // agent is pinned to this stack.
    let (bare, _) = t.apply(&admin, &template()).await;
    let bare_token = t.get(&format!("/v3/alm/stack/{bare}"), &admin).await.json()["auth_token"]
        .as_str()
        .expect("auth_token")
        .to_owned();
    let reply = t
        .raw(t.http.post(t.url("/v3/access_token")).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", bare.as_str()),
            ("client_secret", bare_token.as_str()),
        ]))
        .await;
    let bare_auth = format!(
        "Bearer {}",
        reply.json()["access_token"].as_str().expect("token")
    );
    for (path, form) in [
        (
            "/v3/alm/agent/agent_status",
            vec![
                ("agent_id", "alm-agent-9"),
                ("stack_id", bare.as_str()),
                ("status", "uptodate"),
            ],
        ),
        (
            "/v3/alm/agent/container_status",
            vec![
                ("agent_id", "alm-agent-9"),
                ("container_id", ""),
                ("stack_id", bare.as_str()),
                ("status", "running"),
            ],
        ),
    ] {
        let reply = t
            .raw(
                t.http
                    .post(t.url(path))
                    .header("Authorization", &bare_auth)
                    .form(&form),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
    }
    let containers = t
        .get(&format!("/v3/alm/stack/{bare}/containers"), &admin)
        .await
        .json();
    assert_eq!(containers[0]["instance_id"], "alm-agent-9", "{containers}");
    // Its spot notice names no instance either: with no pinned agent there
    // is none to act on, and the answer says so (a conflict with the
    // stack's state: a pinned agent would make the same notice valid).
    let reply = t
        .raw(
            t.http
                .post(t.url("/v3/event/spot/shutdown"))
                .header("Authorization", &bare_auth)
                .form(&[
                    ("instance_id", ""),
                    ("stack_id", bare.as_str()),
                    ("user_id", "u"),
                ]),
        )
        .await;
    assert_eq!(reply.error(409), "conflict");

    // `container_updated` grows with every version, even two stored within
    // one second, so the agent applies each.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let config = t
            .raw(
                t.http
                    .get(t.url(&format!("/v3/alm/agent/config?flag=Web01&stack_id={bare}")))
                    .header("Authorization", &bare_auth),
            )
            .await
            .json();
        seen.push(config["container_updated"].as_i64().expect("updated"));
        let reply = t
            .send(
                reqwest::Method::PUT,
                &format!("/v3/alm/template/{bare}"),
                Some(&admin),
                Some(&template()),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(
        seen.iter().all(|s| u32::try_from(*s).is_ok()),
        "fits the agent's 32-bit parse"
    );

    // A bad report is refused; a wrong stack secret gets 401 at the token.
    let reply = t
        .raw(
            t.http
                .post(t.url("/v3/alm/agent/container_status"))
                .header("Authorization", &authorization)
                .form(&[("stack_id", stack.as_str()), ("instance_id", "i-0legacy")]),
        )
        .await;
    assert_eq!(reply.error(400), "invalid_field");
    let reply = t
        .raw(t.http.post(t.url("/v3/access_token")).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", stack.as_str()),
            ("client_secret", "not-the-auth-token"),
        ]))
        .await;
    assert_eq!(reply.error(401), "invalid_client");
    let reply = t
        .raw(
            t.http
                .get(t.url(&format!("/v3/alm/agent/config?stack_id={stack}&flag=Web01"))),
        )
        .await;
    assert_eq!(reply.error(401), "unauthorized");
    t.stop().await;
}
