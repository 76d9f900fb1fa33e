//! Long-lived reads: the event stream (SSE), which reconnects with
//! `Last-Event-ID` so no event is missed or repeated, and container logs.

use crate::client::{CallError, Client};
use reqwest::Method;
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

/// One parsed SSE event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub data: String,
}

/// Splits complete SSE blocks off `buffer`; comments (heartbeats) are
/// dropped.
pub fn take_events(buffer: &mut String) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut id = None;
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
            }
        }
        if !data.is_empty() {
            out.push(SseEvent {
                id,
                data: data.join("\n"),
            });
        }
    }
    out
}

/// Follows `/v3/events` (with `query`), calling `each` for every event,
/// reconnecting after a dropped connection from the last id seen. Ends
/// only on an API error (a bad token, say) or when `each` says stop.
pub async fn follow_events(
    client: &Client,
    query: &str,
    mut after: Option<u64>,
    mut each: impl FnMut(&Value) -> bool,
) -> Result<(), CallError> {
    loop {
        let mut request = client
            .request(Method::GET, &format!("/v3/events{query}"))
            .header("Accept", "text/event-stream");
        if let Some(id) = after {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let mut response = match client.open_stream(request).await {
            Ok(response) => response,
            Err(CallError::Unreachable { url, reason }) => {
                eprintln!("event stream: cannot reach {url} ({reason}); retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(err) => return Err(err),
        };
        let mut buffer = String::new();
        loop {
            match response.chunk().await {
                Ok(Some(bytes)) => {
                    buffer.push_str(&String::from_utf8_lossy(&bytes));
                    for event in take_events(&mut buffer) {
                        if let Some(id) = event.id {
                            after = Some(id);
                        }
                        let value: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                        if !each(&value) {
                            return Ok(());
                        }
                    }
                }
                Ok(None) | Err(_) => {
                    eprintln!("event stream: connection closed; resuming after {after:?}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

/// Copies a stack instance's container output to standard output.
pub async fn logs(client: &Client, path: &str) -> Result<(), CallError> {
    let request = client.request(Method::GET, path);
    let mut response = client.open_stream(request).await?;
    let mut stdout = std::io::stdout();
    while let Ok(Some(bytes)) = response.chunk().await {
        if stdout
            .write_all(&bytes)
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks_parse_and_heartbeats_are_dropped() {
        let mut buffer =
            ":heartbeat\n\nid: 7\nevent: stack.created\ndata: {\"id\":7}\n\nid: 8\ndata: {"
                .to_owned();
        let events = take_events(&mut buffer);
        assert_eq!(
            events,
            [SseEvent {
                id: Some(7),
                data: "{\"id\":7}".into()
            }]
        );
        assert_eq!(buffer, "id: 8\ndata: {", "an incomplete block waits");
    }
}
