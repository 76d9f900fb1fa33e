//! The metadata watchers against a local server that answers as each
//! cloud documents, and can flip a notice on, answer badly or slowly.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::Router;
use flotilla_agent::spot::{check, CheckError, Cloud, Notice, NoticeKind};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the fake metadata service says.
const QUIET: u8 = 0;
const NOTICE: u8 = 1;
const BROKEN: u8 = 2;
const SLOW: u8 = 3;
const REBALANCE: u8 = 4;

type Mode = Arc<AtomicU8>;

async fn slow_if(mode: &Mode) {
    if mode.load(Ordering::SeqCst) == SLOW {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

async fn aws_token(State(mode): State<Mode>, headers: HeaderMap) -> impl IntoResponse {
    slow_if(&mode).await;
    if !headers.contains_key("x-aws-ec2-metadata-token-ttl-seconds") {
        return (StatusCode::BAD_REQUEST, String::new());
    }
    (StatusCode::OK, "AQAEAtoken".to_owned())
}

fn aws_authorized(headers: &HeaderMap) -> bool {
    headers
        .get("x-aws-ec2-metadata-token")
        .is_some_and(|t| t == "AQAEAtoken")
}

async fn aws_action(State(mode): State<Mode>, headers: HeaderMap) -> impl IntoResponse {
    if !aws_authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    match mode.load(Ordering::SeqCst) {
        NOTICE => (
            StatusCode::OK,
            r#"{"action": "terminate", "time": "2026-11-25T17:11:44Z"}"#.to_owned(),
        ),
        BROKEN => (StatusCode::OK, "{not json".to_owned()),
        _ => (StatusCode::NOT_FOUND, String::new()),
    }
}

async fn aws_rebalance(State(mode): State<Mode>, headers: HeaderMap) -> impl IntoResponse {
    if !aws_authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    match mode.load(Ordering::SeqCst) {
        REBALANCE => (
            StatusCode::OK,
            r#"{"noticeTime": "2026-11-25T17:11:44Z"}"#.to_owned(),
        ),
        _ => (StatusCode::NOT_FOUND, String::new()),
    }
}

fn gcp_authorized(headers: &HeaderMap) -> bool {
    headers
        .get("metadata-flavor")
        .is_some_and(|v| v == "Google")
}

async fn gcp_preempted(State(mode): State<Mode>, headers: HeaderMap) -> impl IntoResponse {
    slow_if(&mode).await;
    if !gcp_authorized(&headers) {
        return (StatusCode::FORBIDDEN, String::new());
    }
    match mode.load(Ordering::SeqCst) {
        NOTICE => (StatusCode::OK, "TRUE".to_owned()),
        BROKEN => (StatusCode::OK, "MAYBE".to_owned()),
        _ => (StatusCode::OK, "FALSE".to_owned()),
    }
}

async fn gcp_maintenance(State(mode): State<Mode>, headers: HeaderMap) -> impl IntoResponse {
    if !gcp_authorized(&headers) {
        return (StatusCode::FORBIDDEN, String::new());
    }
    match mode.load(Ordering::SeqCst) {
        REBALANCE => (StatusCode::OK, "TERMINATE_ON_HOST_MAINTENANCE".to_owned()),
        _ => (StatusCode::OK, "NONE".to_owned()),
    }
}

async fn azure_events(State(mode): State<Mode>, headers: HeaderMap) -> impl IntoResponse {
    slow_if(&mode).await;
    if headers.get("metadata").is_none_or(|v| v != "true") {
        return (StatusCode::BAD_REQUEST, String::new());
    }
    match mode.load(Ordering::SeqCst) {
        NOTICE => (
            StatusCode::OK,
            r#"{"DocumentIncarnation": 2, "Events": [
                {"EventId": "A1", "EventType": "Freeze", "ResourceType": "VirtualMachine", "Resources": ["vm1"], "EventStatus": "Scheduled", "NotBefore": ""},
                {"EventId": "B2", "EventType": "Preempt", "ResourceType": "VirtualMachine", "Resources": ["vm1"], "EventStatus": "Scheduled", "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT"}
            ]}"#
                .to_owned(),
        ),
        BROKEN => (StatusCode::INTERNAL_SERVER_ERROR, String::new()),
        _ => (StatusCode::OK, r#"{"DocumentIncarnation": 1, "Events": []}"#.to_owned()),
    }
}

async fn server() -> (String, Mode) {
    let mode: Mode = Arc::new(AtomicU8::new(QUIET));
    let app = Router::new()
        .route("/latest/api/token", put(aws_token))
        .route("/latest/meta-data/spot/instance-action", get(aws_action))
        .route(
            "/latest/meta-data/events/recommendations/rebalance",
            get(aws_rebalance),
        )
        .route("/computeMetadata/v1/instance/preempted", get(gcp_preempted))
        .route(
            "/computeMetadata/v1/instance/maintenance-event",
            get(gcp_maintenance),
        )
        .route("/metadata/scheduledevents", get(azure_events))
        .with_state(mode.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), mode)
}

const TIMEOUT: Duration = Duration::from_millis(500);

#[tokio::test]
async fn aws_imdsv2_notices_and_refusals() {
    let (base, mode) = server().await;
    assert_eq!(
        check(Cloud::Aws, &base, TIMEOUT).await,
        Ok(None),
        "404: nothing scheduled"
    );
    mode.store(NOTICE, Ordering::SeqCst);
    assert_eq!(
        check(Cloud::Aws, &base, TIMEOUT).await,
        Ok(Some(Notice {
            cloud: Cloud::Aws,
            kind: NoticeKind::Terminate,
            deadline: Some("2026-11-25T17:11:44Z".into())
        }))
    );
    mode.store(REBALANCE, Ordering::SeqCst);
    assert_eq!(
        check(Cloud::Aws, &base, TIMEOUT)
            .await
            .map(|n| n.map(|n| n.kind)),
        Ok(Some(NoticeKind::Rebalance))
    );
    mode.store(BROKEN, Ordering::SeqCst);
    assert!(matches!(
        check(Cloud::Aws, &base, TIMEOUT).await,
        Err(CheckError::Undecodable { .. })
    ));
    mode.store(SLOW, Ordering::SeqCst);
    assert_eq!(
        check(Cloud::Aws, &base, TIMEOUT).await,
        Err(CheckError::TimedOut)
    );
    // Nothing listening: an error to retry, not a notice.
    assert!(matches!(
        check(Cloud::Aws, "http://127.0.0.1:9", TIMEOUT).await,
        Err(CheckError::Unreachable(_))
    ));
}

#[tokio::test]
async fn an_unauthorized_answer_is_an_error_not_a_termination() {
    // A server that answers 401 to everything (an IMDSv2 endpoint asked
    // without a token): the original agent read that as a termination.
    let app = Router::new().fallback(|| async { StatusCode::UNAUTHORIZED });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let result = check(Cloud::Aws, &format!("http://{addr}"), TIMEOUT).await;
    assert!(
        matches!(result, Err(CheckError::Unexpected { status: 401, .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn gcp_preemption_and_maintenance() {
    let (base, mode) = server().await;
    assert_eq!(check(Cloud::Gcp, &base, TIMEOUT).await, Ok(None));
    mode.store(NOTICE, Ordering::SeqCst);
    assert_eq!(
        check(Cloud::Gcp, &base, TIMEOUT)
            .await
            .map(|n| n.map(|n| n.kind)),
        Ok(Some(NoticeKind::Preempt))
    );
    mode.store(REBALANCE, Ordering::SeqCst);
    assert_eq!(
        check(Cloud::Gcp, &base, TIMEOUT)
            .await
            .map(|n| n.map(|n| n.kind)),
        Ok(Some(NoticeKind::Maintenance))
    );
    mode.store(BROKEN, Ordering::SeqCst);
    assert!(matches!(
        check(Cloud::Gcp, &base, TIMEOUT).await,
        Err(CheckError::Undecodable { .. })
    ));
    mode.store(SLOW, Ordering::SeqCst);
    assert_eq!(
        check(Cloud::Gcp, &base, TIMEOUT).await,
        Err(CheckError::TimedOut)
    );
}

#[tokio::test]
async fn azure_scheduled_events() {
    let (base, mode) = server().await;
    assert_eq!(check(Cloud::Azure, &base, TIMEOUT).await, Ok(None));
    mode.store(NOTICE, Ordering::SeqCst);
    assert_eq!(
        check(Cloud::Azure, &base, TIMEOUT).await,
        Ok(Some(Notice {
            cloud: Cloud::Azure,
            kind: NoticeKind::Preempt,
            deadline: Some("Mon, 19 Sep 2016 18:29:47 GMT".into())
        })),
        "Freeze is not a notice; Preempt is"
    );
    mode.store(BROKEN, Ordering::SeqCst);
    assert!(matches!(
        check(Cloud::Azure, &base, TIMEOUT).await,
        Err(CheckError::Unexpected { status: 500, .. })
    ));
    mode.store(SLOW, Ordering::SeqCst);
    assert_eq!(
        check(Cloud::Azure, &base, TIMEOUT).await,
        Err(CheckError::TimedOut)
    );
}
