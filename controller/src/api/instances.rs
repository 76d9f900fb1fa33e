//! Operator actions on one instance's containers of a stack (restart, stop,
//! start) and their output, streamed from the agent over the fleet link.

use super::caller::Operator;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiPath, ApiQuery};
use super::stacks::load_owned_stack;
use super::state::AppState;
use crate::store::{AgentRecord, AgentState, StackRecord};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla_common::wire::messages::{Action, Command, ControllerMessage, LogsFrame, LogsRequest};
use flotilla_common::wire::{codes, frame};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FlagQuery {
    /// One configuration; all of the stack's on the instance when absent.
    pub flag: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// One configuration; the first of the stack's on the instance when absent.
    pub flag: Option<String>,
    /// Lines from the end to start with (default: all).
    pub tail: Option<u32>,
    /// Keep the response open and stream new output as it comes.
    #[serde(default)]
    pub follow: bool,
}

/// Answer to an action.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionAccepted {
    /// Always `accepted`: the result shows in the containers' statuses.
    pub status: String,
    pub action: String,
    pub stack_id: String,
    pub instance_id: String,
}

/// The agent running `stack` on `instance_id`, checked to be connected.
fn placed_agent(
    state: &AppState,
    stack: &StackRecord,
    instance_id: &str,
) -> ApiResult<AgentRecord> {
    let agent = state
        .store
        .agent_by_instance(instance_id)?
        .filter(|a| a.state != AgentState::Revoked)
        .ok_or_else(|| ApiError::not_found("instance_id", instance_id))?;
    let placed = state
        .store
        .desired(&agent.agent_id)?
        .placements
        .iter()
        .any(|p| p.stack_id == stack.stack_id);
    if !placed {
        return Err(ApiError::not_found("instance_id", instance_id)
            .context(json!({"instance_id": instance_id, "stack_id": stack.stack_id})));
    }
    Ok(agent)
}

fn not_connected(instance_id: &str) -> ApiError {
    ApiError::conflict(format!(
        "instance {instance_id} is not connected; try again when it is"
    ))
    .context(json!({ "instance_id": instance_id }))
}

/// Restarts, stops or starts the stack's containers on one instance. The
/// answer comes at once; the containers' statuses show the outcome.
#[utoipa::path(post, path = "/v3/alm/stack/{stack_id}/instances/{instance_id}/{action}", tag = "stacks",
    security(("bearer" = [])),
    params(
        ("stack_id" = String, Path, description = "Stack id"),
        ("instance_id" = String, Path, description = "Instance id"),
        ("action" = String, Path, description = "`restart`, `stop` or `start`"),
        FlagQuery,
    ),
    responses(
        (status = 202, description = "Sent to the agent", body = ActionAccepted),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot do this", body = ErrorBody),
        (status = 404, description = "No such stack, instance, placement or action", body = ErrorBody),
        (status = 409, description = "The instance is not connected", body = ErrorBody),
    ))]
pub async fn act(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath((stack_id, instance_id, action)): ApiPath<(String, String, String)>,
    ApiQuery(query): ApiQuery<FlagQuery>,
) -> ApiResult<(StatusCode, Json<ActionAccepted>)> {
    let (parsed, audited) = match action.as_str() {
        "restart" => (Action::Restart, crate::audit::Action::InstanceRestart),
        "stop" => (Action::Stop, crate::audit::Action::InstanceStop),
        "start" => (Action::Start, crate::audit::Action::InstanceStart),
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("unknown action {action:?}; use restart, stop or start"),
            ))
        }
    };
    let stack = load_owned_stack(&state, &operator, &stack_id)?;
    let agent = placed_agent(&state, &stack, &instance_id)?;
    let changes = json!({ "flag": query.flag, "agent_id": agent.agent_id });
    let command = ControllerMessage::Command(Command {
        stack_id: stack_id.clone(),
        flag: query.flag,
        action: parsed,
    });
    if !state.fleet.registry.send(&agent.agent_id, command) {
        return Err(not_connected(&instance_id));
    }
    let record = crate::audit::Record {
        action: audited,
        target: &stack_id,
        stack_id: Some(&stack_id),
        instance_id: Some(&instance_id),
        changes,
    };
    state.audit(&operator, record)?;
    state.store.flush().await?;
    tracing::info!(stack_id = %stack_id, instance_id = %instance_id, action = %action, "operator action sent");
    Ok((
        StatusCode::ACCEPTED,
        Json(ActionAccepted {
            status: "accepted".into(),
            action,
            stack_id,
            instance_id,
        }),
    ))
}

/// Most log follows one client may hold open on one instance.
const MAX_FOLLOWS: usize = 4;
/// Longest wait for an agent to take a log stream.
const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The agent did not take the stream in time (504, the one error shape).
fn agent_timeout(instance_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "agent_timeout",
        format!(
            "the agent on {instance_id} did not open a log stream within {} s",
            OPEN_TIMEOUT.as_secs()
        ),
    )
    .context(json!({ "instance_id": instance_id }))
}

/// Opens a log stream on the agent's connection, sends the request and
/// reads the agent's first frame.
async fn open_stream(
    connection: &quinn::Connection,
    request: &LogsRequest,
    max: usize,
) -> Result<(quinn::RecvStream, LogsFrame), frame::FrameError> {
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|err| frame::FrameError::Io(err.into()))?;
    frame::write(&mut send, request, 16 * 1024).await?;
    let _ = send.finish();
    match frame::read::<_, LogsFrame>(&mut recv, max).await? {
        Some(first) => Ok((recv, first)),
        None => Err(frame::FrameError::Truncated),
    }
}

/// The output of the stack's container on one instance, streamed from the
/// agent as it arrives (`text/plain`). With `follow=true` the response
/// stays open; closing it stops the stream on the agent.
#[utoipa::path(get, path = "/v3/alm/stack/{stack_id}/instances/{instance_id}/logs", tag = "stacks",
    security(("bearer" = [])),
    params(
        ("stack_id" = String, Path, description = "Stack id"),
        ("instance_id" = String, Path, description = "Instance id"),
        LogsQuery,
    ),
    responses(
        (status = 200, description = "The container's output", content_type = "text/plain", body = String),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot do this", body = ErrorBody),
        (status = 404, description = "No such stack, instance or placement", body = ErrorBody),
        (status = 409, description = "The instance is not connected", body = ErrorBody),
        (status = 429, description = "too_many_follows: the client holds the most follows of this instance", body = ErrorBody),
        (status = 504, description = "agent_timeout: the agent did not take the stream in time", body = ErrorBody),
    ))]
pub async fn logs(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath((stack_id, instance_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> ApiResult<Response> {
    let stack = load_owned_stack(&state, &operator, &stack_id)?;
    let agent = placed_agent(&state, &stack, &instance_id)?;
    let connection = state
        .fleet
        .registry
        .connection(&agent.agent_id)
        .ok_or_else(|| not_connected(&instance_id))?;
    let place = if query.follow {
        let place = state
            .follows
            .take(&operator.client_id, &instance_id, MAX_FOLLOWS)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_follows",
                    format!("at most {MAX_FOLLOWS} open follows of {instance_id} per client; close one first"),
                )
                .context(json!({ "instance_id": instance_id, "limit": MAX_FOLLOWS }))
            })?;
        Some(place)
    } else {
        None
    };
    let request = LogsRequest {
        stack_id,
        flag: query.flag,
        tail: query.tail,
        follow: query.follow,
    };
    let max = state.fleet.settings.max_frame;
    // One deadline for the whole opening: the stream, the request, and the
    // agent's first frame (it took the request). An agent that is connected
    // but does not answer (stopped, overloaded) gets no 200 with a body
    // that never moves.
    let (recv, first) =
        match tokio::time::timeout(OPEN_TIMEOUT, open_stream(&connection, &request, max)).await {
            Ok(Ok(opened)) => opened,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "cannot open a log stream on the agent");
                return Err(not_connected(&instance_id));
            }
            Err(_) => return Err(agent_timeout(&instance_id)),
        };
    // The follow's place goes back when the body is dropped (it ends, or
    // its client went away).
    let body =
        futures_util::stream::unfold(Some((Some(first), recv, place)), move |held| async move {
            let (first, mut recv, place) = held?;
            let next = match first {
                Some(first) => Ok(Some(first)),
                None => frame::read::<_, LogsFrame>(&mut recv, max).await,
            };
            match next {
                Ok(Some(LogsFrame::Chunk(bytes))) => Some((
                    Ok::<Bytes, std::io::Error>(Bytes::from(bytes)),
                    Some((None, recv, place)),
                )),
                Ok(Some(LogsFrame::End { error: Some(error) })) => Some((
                    Ok(Bytes::from(format!(
                        "\n[flotilla: log stream ended: {error}]\n"
                    ))),
                    None,
                )),
                Ok(Some(LogsFrame::End { error: None })) | Ok(None) => {
                    let _ = recv.stop(codes::CLOSED);
                    None
                }
                Err(err) => Some((Err(std::io::Error::other(err.to_string())), None)),
            }
        });
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
