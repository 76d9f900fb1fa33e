//! The metadata watchers against a local server that answers as each
//! cloud documents, and can flip a notice on, answer badly or slowly.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::Router;
use flotilla_agent::spot::detect::{detect, instance_facts, InstanceFacts};
use flotilla_agent::spot::watch::{watch, WatchSettings};
use flotilla_agent::spot::{check, CheckError, Cloud, Notice, NoticeKind};
use std::collections::HashMap;
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

/// GCP's `preempted`, versioned by an ETag; with `wait_for_change=true`
/// and the current `last_etag` the answer waits for a change, as GCP's
/// metadata server does.
async fn gcp_preempted(
    State(mode): State<Mode>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    slow_if(&mode).await;
    let etag = |mode: &Mode| format!("etag{}", mode.load(Ordering::SeqCst));
    if !gcp_authorized(&headers) {
        return (
            StatusCode::FORBIDDEN,
            [(header::ETAG, etag(&mode))],
            String::new(),
        );
    }
    if query.get("wait_for_change").is_some_and(|v| v == "true") {
        if let Some(last) = query.get("last_etag") {
            let limit = Duration::from_secs(
                query
                    .get("timeout_sec")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(60),
            );
            let started = std::time::Instant::now();
            while etag(&mode) == *last && started.elapsed() < limit {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let body = match mode.load(Ordering::SeqCst) {
        NOTICE => "TRUE",
        BROKEN => "MAYBE",
        _ => "FALSE",
    };
    (
        StatusCode::OK,
        [(header::ETAG, etag(&mode))],
        body.to_owned(),
    )
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

async fn aws_fact(Path(fact): Path<String>, headers: HeaderMap) -> impl IntoResponse {
    if !aws_authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    match fact.as_str() {
        "instance-id" => (StatusCode::OK, "i-0abc".to_owned()),
        "instance-type" => (StatusCode::OK, "m5.large".to_owned()),
        "instance-life-cycle" => (StatusCode::OK, "spot".to_owned()),
        _ => (StatusCode::NOT_FOUND, String::new()),
    }
}

async fn gcp_fact(Path(fact): Path<String>, headers: HeaderMap) -> impl IntoResponse {
    if !gcp_authorized(&headers) {
        return (StatusCode::FORBIDDEN, String::new());
    }
    match fact.as_str() {
        "id" => (StatusCode::OK, "4567".to_owned()),
        "machine-type" => (
            StatusCode::OK,
            "projects/123/machineTypes/e2-small".to_owned(),
        ),
        "scheduling/provisioning-model" => (StatusCode::OK, "SPOT".to_owned()),
        _ => (StatusCode::NOT_FOUND, String::new()),
    }
}

async fn azure_compute(headers: HeaderMap) -> impl IntoResponse {
    if headers.get("metadata").is_none_or(|v| v != "true") {
        return (StatusCode::BAD_REQUEST, String::new());
    }
    (
        StatusCode::OK,
        r#"{"vmId": "02aab8a4-74ef", "vmSize": "Standard_D2s_v3", "priority": "Regular", "location": "westeurope"}"#
            .to_owned(),
    )
}

/// Which clouds' paths the fake serves.
#[derive(Clone, Copy)]
struct Serve {
    aws: bool,
    gcp: bool,
    azure: bool,
}

const ALL: Serve = Serve {
    aws: true,
    gcp: true,
    azure: true,
};

async fn server() -> (String, Mode) {
    server_of(ALL).await
}

async fn server_of(serve: Serve) -> (String, Mode) {
    let mode: Mode = Arc::new(AtomicU8::new(QUIET));
    let mut app = Router::new();
    if serve.aws {
        app = app
            .route("/latest/api/token", put(aws_token))
            .route("/latest/meta-data/spot/instance-action", get(aws_action))
            .route(
                "/latest/meta-data/events/recommendations/rebalance",
                get(aws_rebalance),
            )
            .route("/latest/meta-data/{*fact}", get(aws_fact));
    }
    if serve.gcp {
        app = app
            .route("/computeMetadata/v1/instance/preempted", get(gcp_preempted))
            .route(
                "/computeMetadata/v1/instance/maintenance-event",
                get(gcp_maintenance),
            )
            .route("/computeMetadata/v1/instance/{*fact}", get(gcp_fact));
    }
    if serve.azure {
        app = app
            .route("/metadata/scheduledevents", get(azure_events))
            .route("/metadata/instance/compute", get(azure_compute));
    }
    let app = app.with_state(mode.clone());
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

#[tokio::test]
async fn detection_finds_the_cloud_that_answers_and_none_elsewhere() {
    let only = |aws, gcp, azure| Serve { aws, gcp, azure };
    for (serve, want) in [
        (only(true, false, false), Cloud::Aws),
        (only(false, true, false), Cloud::Gcp),
        (only(false, false, true), Cloud::Azure),
    ] {
        let (base, _) = server_of(serve).await;
        assert_eq!(detect(Some(&base), TIMEOUT).await, Some(want));
    }
    let started = std::time::Instant::now();
    assert_eq!(detect(Some("http://127.0.0.1:9"), TIMEOUT).await, None);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn instance_facts_give_id_type_and_lifecycle() {
    let (base, _) = server().await;
    assert_eq!(
        instance_facts(Cloud::Aws, &base, TIMEOUT).await,
        InstanceFacts {
            instance_id: Some("i-0abc".into()),
            instance_type: Some("m5.large".into()),
            lifecycle: Some("spot".into()),
        }
    );
    assert_eq!(
        instance_facts(Cloud::Gcp, &base, TIMEOUT).await,
        InstanceFacts {
            instance_id: Some("4567".into()),
            instance_type: Some("e2-small".into()),
            lifecycle: Some("spot".into()),
        }
    );
    let azure = instance_facts(Cloud::Azure, &base, TIMEOUT).await;
    assert_eq!(azure.instance_type.as_deref(), Some("Standard_D2s_v3"));
    assert_eq!(azure.lifecycle.as_deref(), Some("on-demand"));
    let labels = azure.labels(Cloud::Azure);
    assert_eq!(labels["cloud"], "azure");
    assert_eq!(labels["lifecycle"], "on-demand");
    assert_eq!(
        instance_facts(Cloud::Aws, "http://127.0.0.1:9", TIMEOUT).await,
        InstanceFacts::default(),
        "no metadata, no facts (and no failure)"
    );
}

#[tokio::test]
async fn the_watch_loop_outlives_errors_and_hands_on_the_notice() {
    let (base, mode) = server().await;
    mode.store(BROKEN, Ordering::SeqCst);
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let task = tokio::spawn(watch(
        WatchSettings {
            cloud: Cloud::Gcp,
            base,
            interval: Duration::from_millis(100),
        },
        tx,
    ));
    // Undecodable answers for a while: nothing is handed on.
    assert!(tokio::time::timeout(Duration::from_millis(400), rx.recv())
        .await
        .is_err());
    mode.store(QUIET, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(rx.try_recv().is_err(), "FALSE is not a notice");
    mode.store(NOTICE, Ordering::SeqCst);
    let notice = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("a notice within the interval")
        .expect("open");
    assert_eq!(notice.kind, NoticeKind::Preempt);
    assert!(!task.is_finished());
    drop(rx);
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the loop ends when nobody listens")
        .expect("no panic");
}

#[tokio::test]
async fn gcp_preemption_arrives_by_hanging_get_not_by_the_next_poll() {
    let (base, mode) = server().await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    // Polls alone would see a notice only after up to 5 s.
    let task = tokio::spawn(watch(
        WatchSettings {
            cloud: Cloud::Gcp,
            base,
            interval: Duration::from_secs(5),
        },
        tx,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err());
    let flipped = std::time::Instant::now();
    mode.store(NOTICE, Ordering::SeqCst);
    let notice = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("the hanging GET answers at once")
        .expect("open");
    assert_eq!(notice.kind, NoticeKind::Preempt);
    assert!(
        flipped.elapsed() < Duration::from_millis(500),
        "{:?}",
        flipped.elapsed()
    );
    task.abort();
}
