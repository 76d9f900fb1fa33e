//! `GET /metrics`: OpenMetrics text that a Prometheus parser accepts, with
//! the REST counters by route template and status.

mod support;

use reqwest::StatusCode;
use std::collections::HashMap;
use support::{reference_v1, TestServer};

/// Parses the exposition: sample name with labels → value. Refuses any
/// line that is neither a comment nor `name{labels} value`.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').expect("name value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let bare = name.split('{').next().unwrap_or_default();
        assert!(
            bare.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        samples.insert(name.to_owned(), value);
    }
    samples
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_show_fleet_gauges() {
    let t = TestServer::start().await;
    let (_, _, token) = t.user("grace").await;
    let (stack, _) = t.apply(&token, &reference_v1()).await;
    t.get(&format!("/v3/alm/stack/{stack}"), &token).await;
    t.get("/v3/alm/stack/mo-nope", &token).await;

    let reply = t.raw(t.http.get(t.url("/metrics"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let kind = reply.headers["content-type"].to_str().expect("type");
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let samples = parse(&reply.text);
    let created =
        r#"flotilla_http_requests_total{method="POST",route="/v3/alm/template",status="201"}"#;
    assert_eq!(samples.get(created), Some(&1.0), "{}", reply.text);
    let described = r#"flotilla_http_requests_total{method="GET",route="/v3/alm/stack/{stack_id}",status="200"}"#;
    assert_eq!(samples.get(described), Some(&1.0));
    let missing = r#"flotilla_http_requests_total{method="GET",route="/v3/alm/stack/{stack_id}",status="404"}"#;
    assert_eq!(samples.get(missing), Some(&1.0), "ids never become labels");
    assert!(samples
        .keys()
        .any(|k| k.starts_with("flotilla_http_request_duration_seconds_bucket{")));
    assert_eq!(
        samples.get(r#"flotilla_agents{state="connected"}"#),
        Some(&0.0)
    );
    assert_eq!(samples.get("flotilla_agents_connected"), Some(&0.0));
    assert!(samples["flotilla_store_size_bytes"] > 0.0);
    assert!(samples.contains_key("flotilla_desired_pushes_total"));
    assert!(samples.contains_key("flotilla_desired_ack_latency_seconds_count"));
    t.stop().await;
}
