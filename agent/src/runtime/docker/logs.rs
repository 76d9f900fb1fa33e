//! Container output for operators: the engine's log stream of a slot's
//! container, forwarded until it ends or the reader goes away.

use super::{engine, names};
use bollard::query_parameters::LogsOptions;
use bollard::Docker;
use flotilla_common::wire::messages::LogsRequest;
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// Longest chunk forwarded at once (keeps frames small).
const CHUNK: usize = 64 * 1024;

/// Finds the container of `request`'s slot (the running one first) and
/// streams its output into `sink`.
pub async fn stream(
    docker: Docker,
    agent_id: String,
    request: LogsRequest,
    sink: mpsc::Sender<Result<Vec<u8>, String>>,
) {
    let containers = match engine::list_labelled(&docker, names::STACK, &request.stack_id).await {
        Ok(containers) => containers,
        Err(err) => {
            let _ = sink.send(Err(err)).await;
            return;
        }
    };
    let mut candidates: Vec<_> = containers
        .into_iter()
        .filter(|c| {
            let labels = c.labels.clone().unwrap_or_default();
            labels.get(names::AGENT) == Some(&agent_id)
                && request
                    .flag
                    .as_ref()
                    .is_none_or(|flag| labels.get(names::FLAG) == Some(flag))
        })
        .collect();
    candidates.sort_by_key(|c| {
        !matches!(
            c.state,
            Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
        )
    });
    let Some(id) = candidates.into_iter().find_map(|c| c.id) else {
        let _ = sink
            .send(Err(format!(
                "no container of stack {} on this agent",
                request.stack_id
            )))
            .await;
        return;
    };
    let options = LogsOptions {
        follow: request.follow,
        stdout: true,
        stderr: true,
        tail: request
            .tail
            .map_or_else(|| "all".to_owned(), |n| n.to_string()),
        ..Default::default()
    };
    let mut output = docker.logs(&id, Some(options));
    loop {
        // A follow with no new output still ends when the reader goes.
        let item = tokio::select! {
            item = output.next() => item,
            () = sink.closed() => return,
        };
        let Some(item) = item else { return };
        let bytes = match item {
            Ok(output) => output.into_bytes(),
            Err(err) => {
                let _ = sink.send(Err(engine::describe(&err))).await;
                return;
            }
        };
        for chunk in bytes.chunks(CHUNK) {
            // The reader is gone (operator closed the request): stop.
            if sink.send(Ok(chunk.to_vec())).await.is_err() {
                return;
            }
        }
    }
}
