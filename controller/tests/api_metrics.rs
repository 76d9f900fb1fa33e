//! Request metrics stay bounded: methods the API does not serve share one
//! label instead of minting a series each.

mod support;

use reqwest::Method;
use support::TestServer;

#[tokio::test]
async fn made_up_methods_are_counted_as_other() {
    let t = TestServer::start().await;
    for i in 0..50 {
        let method = Method::from_bytes(format!("M{i:08}").as_bytes()).expect("method");
        let reply = t.send(method, "/healthz", None, None).await;
        assert_eq!(reply.error(405), "method_not_allowed");
    }
    let text = t.raw(t.http.get(t.url("/metrics"))).await.text;
    assert!(!text.contains("M0000"), "no series per made-up method");
    let other: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("flotilla_http_requests_total{") && l.contains("method=\"other\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(other >= 50.0, "{text}");
    t.stop().await;
}
