//! A real controller on 127.0.0.1:0 with a temporary data dir, and a real
//! HTTP client to drive it.

#![allow(dead_code)]

pub mod hooks;

use flotilla_controller::config::Config;
use flotilla_controller::server::{CredentialsFile, Server, ADMIN_CREDENTIALS_FILE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

pub struct TestServer {
    pub server: Option<Server>,
    pub base: String,
    pub http: reqwest::Client,
    pub admin: CredentialsFile,
    pub dir: tempfile::TempDir,
    pub config: Config,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {:?}", self.text))
    }

    /// Asserts the one error shape and the status; returns the first code.
    pub fn error(&self, status: u16) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        let body = self.json();
        let errors = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors array: {body}"));
        assert!(!errors.is_empty(), "{body}");
        for error in errors {
            assert!(error["code"].is_string(), "{body}");
            assert!(
                error["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{body}"
            );
            assert!(error["context"].is_object(), "{body}");
        }
        assert_eq!(
            body.as_object().map(|o| o.len()),
            Some(1),
            "only `errors`: {body}"
        );
        errors[0]["code"].as_str().unwrap_or_default().to_owned()
    }
}

pub fn config_for(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        body_limit: 64 * 1024,
        max_container_section: flotilla_controller::config::DEFAULT_MAX_CONTAINER_SECTION,
        token_ttl: Duration::from_secs(3600),
        store_cache_bytes: 8 * 1024 * 1024,
        quic_listen: "127.0.0.1:0".parse().expect("addr"),
        fleet: flotilla_controller::fleet::FleetSettings::default(),
        log_level: None,
        event_retention: None,
        rest_tls: Default::default(),
        // The hook tests' receivers listen on loopback.
        webhook_allow_private: true,
        quotas: Default::default(),
        webhook_timeout: flotilla_controller::hooks::DEFAULT_TIMEOUT,
        restart_timeout: flotilla_controller::stacks::restart::INSTANCE_TIMEOUT,
        http: Default::default(),
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config_for(dir.path());
        Self::start_with(dir, config).await
    }

    pub async fn start_with(dir: tempfile::TempDir, config: Config) -> TestServer {
        let server = Server::start(config.clone())
            .await
            .expect("controller starts");
        let base = format!("{}://{}", config.rest_tls.scheme(), server.addr);
        let admin: CredentialsFile = serde_json::from_slice(
            &std::fs::read(dir.path().join(ADMIN_CREDENTIALS_FILE)).expect("credentials file"),
        )
        .expect("credentials json");
        // Over HTTPS, trust the fleet CA (what `--tls self` issues from).
        let mut http = reqwest::Client::builder();
        if config.rest_tls != Default::default() {
            let ca = std::fs::read(dir.path().join("pki/ca.pem")).expect("fleet CA");
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"));
        }
        TestServer {
            server: Some(server),
            base,
            http: http.build().expect("client"),
            admin,
            dir,
            config,
        }
    }

    /// Stops the server (graceful) and starts a new one on the same data dir.
    pub async fn restart(mut self) -> TestServer {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("clean stop");
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        Self::start_with(dir, self.config.clone()).await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        read(request).await
    }

    pub async fn raw(&self, request: reqwest::RequestBuilder) -> Reply {
        read(request).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn token_for(&self, client_id: &str, client_secret: &str) -> String {
        let reply = self
            .send(
                Method::POST,
                "/v3/access_token",
                None,
                Some(&json!({"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.json()["access_token"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    pub async fn admin_token(&self) -> String {
        self.token_for(&self.admin.client_id, &self.admin.client_secret)
            .await
    }

    /// Creates a client for `username`, puts the user in the built-in
    /// pool (where the test agents enroll), and returns (client_id, secret,
    /// token).
    pub async fn user(&self, username: &str) -> (String, String, String) {
        let created = self.user_in_no_pool(username).await;
        self.add_to_pool("default", username).await;
        created
    }

    /// Adds `username` to a pool's users (as an admin).
    pub async fn add_to_pool(&self, pool: &str, username: &str) {
        let admin = self.admin_token().await;
        let path = format!("/v3/alm/pools/{pool}");
        let mut body = self.get(&path, &admin).await.json();
        let users = body["users"].as_array_mut().expect("users");
        users.push(json!(username));
        let body = json!({"users": body["users"], "policy": body["policy"]});
        let reply = self
            .send(Method::PUT, &path, Some(&admin), Some(&body))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }

    /// Creates a client for `username` without putting the user in any
    /// pool; returns (client_id, secret, token).
    pub async fn user_in_no_pool(&self, username: &str) -> (String, String, String) {
        let admin = self.admin_token().await;
        let reply = self
            .post("/v3/admin/clients", &admin, &json!({"username": username}))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        let body = reply.json();
        let id = body["client_id"].as_str().expect("id").to_owned();
        let secret = body["client_secret"].as_str().expect("secret").to_owned();
        let token = self.token_for(&id, &secret).await;
        (id, secret, token)
    }

    /// Applies a template and returns (template_id, version_id).
    pub async fn apply(&self, token: &str, template: &Value) -> (String, String) {
        let reply = self.post("/v3/alm/template", token, template).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        let body = reply.json();
        (
            body["template_id"]
                .as_str()
                .expect("template_id")
                .to_owned(),
            body["version_id"].as_str().expect("version_id").to_owned(),
        )
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("clean stop");
        }
    }
}

async fn read(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request sent");
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        text: response.text().await.expect("body"),
    }
}

/// The reference's apply example (version label #1).
pub fn reference_v1() -> Value {
    json!({
        "version": "2017-03-03",
        "label": "template version label #1",
        "description": "This template creates a sample stack with EC2 instance on AWS",
        "vendor": {"aws": {"cred": "AKIAJ...DZLA", "region": "ap-northeast-1"}},
        "configurations": [{
            "role": "web",
            "flag": "Web01",
            "provision": {
                "image": "${computed}",
                "volume_type": "${computed}",
                "instance_type": "t2.micro",
                "instance_count": 1,
                "keypair": true
            }
        }]
    })
}

/// The reference's update example (version label #2).
pub fn reference_v2() -> Value {
    json!({
        "version": "2017-03-03",
        "label": "template version label #2",
        "description": "This template creates a sample stack with EC2 instance on AWS",
        "vendor": {"aws": {"cred": "AKIAJ...DZLA", "region": "ap-northeast-1"}},
        "configurations": [{
            "role": "web",
            "flag": "Web01",
            "provision": {
                "image": "${computed}",
                "instance_type": "m3.medium",
                "instance_count": 2,
                "keypair": true
            }
        }]
    })
}

/// A template with a container section, as the agent endpoint serves it.
pub fn container_template() -> Value {
    json!({
        "version": "2017-03-03",
        "label": "web with container",
        "configurations": [{
            "role": "web",
            "flag": "Web01",
            "provision": {"instance_type": "t2.micro", "instance_count": 0},
            "container": {
                "image": "registry.mobingi.com/mobingi/ubuntu-apache2-php5",
                "environment_variables": {"Stage": "_development", "DB_USERNAME": "root"},
                "gitReference": "master",
                "gitPrivateKey": "-----BEGIN PRIVATE ...\n-----END PRIVATE KEY-----\n",
                "gitRepo": "https://github.com/mobingilabs/default-site-php.git"
            }
        }]
    })
}

/// Waits until the scheduler has said why `stack` waits (it has no agent
/// to run on), so a test comparing snapshots sees that write first.
pub async fn wait_reason(t: &TestServer, token: &str, stack: &str) -> Value {
    for _ in 0..200 {
        let body = t.get(&format!("/v3/alm/stack/{stack}"), token).await.json();
        if body["stack_status_reason"].is_string() {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("stack {stack} never said why it waits");
}

/// Polls a stack until it reaches `want` (10 s at most).
pub async fn wait_status(t: &TestServer, token: &str, stack: &str, want: &str) -> Value {
    for _ in 0..200 {
        let body = t.get(&format!("/v3/alm/stack/{stack}"), token).await.json();
        if body["stack_status"] == want {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stack {stack} never reached {want}");
}
