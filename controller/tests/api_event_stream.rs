//! The live event stream (SSE): history then live tail, resumed after a
//! disconnect without a gap or a duplicate, filtered, owner-scoped, and
//! ended by a server shutdown.

mod support;

use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;
use support::{reference_v1, TestServer};

/// An open event stream, parsed as it arrives.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    async fn open(t: &TestServer, token: &str, query: &str, last_id: Option<u64>) -> Stream {
        let mut request = t
            .http
            .get(t.url(&format!("/v3/events{query}")))
            .bearer_auth(token)
            .header("Accept", "text/event-stream");
        if let Some(id) = last_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("stream opened");
        assert_eq!(response.status(), StatusCode::OK);
        let kind = response.headers()["content-type"].to_str().expect("type");
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Stream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event: (id, type, record). `None` when the stream ends.
    async fn next(&mut self) -> Option<(u64, String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (None, None, None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        kind = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = serde_json::from_str(v.trim()).ok();
                    }
                }
                match (id, kind, data) {
                    (Some(id), Some(kind), Some(data)) => return Some((id, kind, data)),
                    // A heartbeat comment.
                    _ => continue,
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    async fn take(&mut self, n: usize) -> Vec<(u64, String, Value)> {
        let mut out = Vec::new();
        while out.len() < n {
            out.push(self.next().await.expect("stream still open"));
        }
        out
    }
}

#[tokio::test]
async fn the_stream_resumes_after_a_disconnect_without_gap_or_duplicate() {
    let t = TestServer::start().await;
    let (_, _, token) = t.user("ada").await;
    let (first, _) = t.apply(&token, &reference_v1()).await;

    // Stack creations only: the scheduler's status events (a stack waiting
    // for agents says why) interleave with them.
    let mut stream = Stream::open(&t, &token, "?type=stack.created", None).await;
    let history = stream.take(1).await;
    assert_eq!(history[0].1, "stack.created");
    assert_eq!(history[0].2["stack_id"], first.as_str());
    // Live: a new stack appears while connected.
    let (second, _) = t.apply(&token, &reference_v1()).await;
    let live = stream.take(1).await;
    assert_eq!(live[0].2["stack_id"], second.as_str());
    let last_seen = live[0].0;
    drop(stream);

    // While disconnected: three more.
    let mut missed = Vec::new();
    for _ in 0..3 {
        missed.push(t.apply(&token, &reference_v1()).await.0);
    }
    let mut resumed = Stream::open(&t, &token, "?type=stack.created", Some(last_seen)).await;
    let got = resumed.take(3).await;
    let ids: Vec<u64> = got.iter().map(|e| e.0).collect();
    let stacks: Vec<&str> = got
        .iter()
        .map(|e| e.2["stack_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(stacks, missed, "every missed event, in order");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(ids[0] > last_seen, "nothing repeated");
    // And then live again.
    let (later, _) = t.apply(&token, &reference_v1()).await;
    assert_eq!(resumed.take(1).await[0].2["stack_id"], later.as_str());

    // `since` works like Last-Event-ID; `follow=true` like the Accept header.
    let mut by_query = Stream::open(
        &t,
        &token,
        &format!("?follow=true&since={last_seen}&type=stack.created"),
        None,
    )
    .await;
    assert_eq!(by_query.take(1).await[0].2["stack_id"], missed[0].as_str());
    t.stop().await;
}

#[tokio::test]
async fn others_stacks_stay_hidden_and_bad_resume_ids_are_refused() {
    let t = TestServer::start().await;
    let (_, _, alice) = t.user("alice").await;
    let (_, _, bob) = t.user("bob").await;
    let (bobs, _) = t.apply(&bob, &reference_v1()).await;
    let (alices, _) = t.apply(&alice, &reference_v1()).await;
    let mut stream = Stream::open(&t, &alice, "?type=stack.created", None).await;
    let first = stream.take(1).await;
    assert_eq!(first[0].2["stack_id"], alices.as_str(), "not {bobs}");
    let (bobs_second, _) = t.apply(&bob, &reference_v1()).await;
    let (alices_second, _) = t.apply(&alice, &reference_v1()).await;
    let next = stream.take(1).await;
    assert_eq!(
        next[0].2["stack_id"],
        alices_second.as_str(),
        "not {bobs_second}"
    );

    let reply = t
        .raw(
            t.http
                .get(t.url("/v3/events"))
                .bearer_auth(&alice)
                .header("Accept", "text/event-stream")
                .header("Last-Event-ID", "yesterday"),
        )
        .await;
    assert_eq!(reply.error(400), "invalid_header");
    let reply = t.raw(t.http.get(t.url("/v3/events?follow=true"))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    t.stop().await;
}

#[tokio::test]
async fn a_shutdown_ends_open_streams_and_completes() {
    let t = TestServer::start().await;
    let token = t.admin_token().await;
    let mut stream = Stream::open(&t, &token, "?type=stack.created", None).await;
    tokio::time::timeout(Duration::from_secs(10), t.stop())
        .await
        .expect("the server stops with a stream open");
    assert!(stream.next().await.is_none(), "the stream ended");
}
