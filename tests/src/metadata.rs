//! A local stand-in for AWS's instance metadata service (IMDSv2), serving
//! its documented answers: a session token from `PUT /latest/api/token`,
//! then (with the token) the instance's id, type and lifecycle, 404 on
//! `spot/instance-action` until a notice is switched on, and 404 on the
//! rebalance recommendation. Requests without a valid token get 401.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use axum::Router;
use std::sync::{Arc, Mutex};

const TOKEN: &str = "AQAEAfake-imds-token";

#[derive(Default)]
struct Answers {
    instance_id: String,
    instance_type: String,
    lifecycle: String,
    /// `{"action": ..., "time": ...}` once a notice is on.
    action: Option<String>,
}

/// A running fake metadata service; stops when dropped.
pub struct FakeAws {
    /// Base URL to give the agent (`--metadata-url`).
    pub url: String,
    answers: Arc<Mutex<Answers>>,
    task: tokio::task::JoinHandle<()>,
}

async fn token(headers: HeaderMap) -> (StatusCode, String) {
    if headers.contains_key("x-aws-ec2-metadata-token-ttl-seconds") {
        (StatusCode::OK, TOKEN.to_owned())
    } else {
        (StatusCode::BAD_REQUEST, String::new())
    }
}

async fn meta_data(
    State(answers): State<Arc<Mutex<Answers>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    if headers
        .get("x-aws-ec2-metadata-token")
        .is_none_or(|t| t != TOKEN)
    {
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    let Ok(answers) = answers.lock() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, String::new());
    };
    let found = match path.as_str() {
        "instance-id" => Some(answers.instance_id.clone()),
        "instance-type" => Some(answers.instance_type.clone()),
        "instance-life-cycle" => Some(answers.lifecycle.clone()),
        "spot/instance-action" => answers.action.clone(),
        _ => None,
    };
    match found {
        Some(body) => (StatusCode::OK, body),
        None => (StatusCode::NOT_FOUND, String::new()),
    }
}

impl FakeAws {
    /// Serves an instance with this id, type and lifecycle (`spot`,
    /// `on-demand`) on 127.0.0.1.
    pub async fn start(
        instance_id: &str,
        instance_type: &str,
        lifecycle: &str,
    ) -> anyhow::Result<FakeAws> {
        let answers = Arc::new(Mutex::new(Answers {
            instance_id: instance_id.to_owned(),
            instance_type: instance_type.to_owned(),
            lifecycle: lifecycle.to_owned(),
            action: None,
        }));
        let app = Router::new()
            .route("/latest/api/token", put(token))
            .route("/latest/meta-data/{*path}", get(meta_data))
            .with_state(answers.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeAws { url, answers, task })
    }

    /// Switches the spot notice on: `action` (`terminate`, `stop`,
    /// `hibernate`) at `time` (RFC 3339). Returns the wall-clock time it
    /// went on (ms since the epoch), the start of every measured delay.
    pub fn notice(&self, action: &str, time: &str) -> i64 {
        let body = serde_json::json!({ "action": action, "time": time }).to_string();
        if let Ok(mut answers) = self.answers.lock() {
            answers.action = Some(body);
        }
        chrono::Utc::now().timestamp_millis()
    }
}

impl Drop for FakeAws {
    fn drop(&mut self) {
        self.task.abort();
    }
}
