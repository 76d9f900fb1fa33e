//! Operations on what a stack runs, each followed by its task: a rolling
//! restart, one instance at a time ([`crate::stacks::restart`]), and
//! stopping or starting the whole stack ([`crate::stacks::stop`]).

use super::caller::Operator;
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiPath, ApiQuery};
use super::stacks::load_owned_stack;
use super::state::AppState;
use crate::stacks::restart::{self, Target};
use crate::store::StackStatus;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Which configuration to restart.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RestartQuery {
    /// One configuration's `flag`; absent or empty: every configuration.
    pub flag: Option<String>,
}

/// A restart under way.
#[derive(Debug, Serialize, ToSchema)]
pub struct RestartResponse {
    pub status: String,
    pub stack_id: String,
    pub stack_status: StackStatus,
    /// Follow it with `GET /v3/tasks/{task_id}`.
    pub task_id: String,
    /// What is restarted, in this order.
    pub instances: Vec<Target>,
}

/// Restarts the stack's containers (or one configuration's) one instance
/// at a time: each is back `running`, past its health check, before the
/// next is restarted. The task fails, naming the instance, when one does
/// not come back within `--restart-timeout` (300 s); a new version or a
/// delete ends it.
#[utoipa::path(post, path = "/v3/alm/stack/{stack_id}/restart", tag = "stacks",
    security(("bearer" = [])),
    params(("stack_id" = String, Path, description = "Stack id"), RestartQuery),
    responses(
        (status = 202, description = "Restart started", body = RestartResponse),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot restart stacks", body = ErrorBody),
        (status = 404, description = "No such stack", body = ErrorBody),
        (status = 409, description = "unknown_flag; the stack is being deleted, a restart is under way, or no instance runs it", body = ErrorBody),
    ))]
pub async fn restart(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(stack_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<RestartQuery>,
) -> ApiResult<(StatusCode, Json<RestartResponse>)> {
    let stack = load_owned_stack(&state, &operator, &stack_id)?;
    let flag = query.flag.filter(|f| !f.is_empty());
    let restarting = state
        .stacks()
        .restart(&stack, operator.actor(), flag.as_deref())
        .await?;
    let response = RestartResponse {
        status: "success".into(),
        stack_id: stack.stack_id.clone(),
        stack_status: stack.stack_status,
        task_id: restarting.task_id.clone(),
        instances: restarting.targets.clone(),
    };
    tokio::spawn(restart::drive(
        state.fleet.clone(),
        stack.stack_id,
        restarting,
        state.settings.restart_timeout,
    ));
    Ok((StatusCode::ACCEPTED, Json(response)))
}

/// A stop or start under way.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldResponse {
    pub status: String,
    pub stack_id: String,
    /// `UPDATE_IN_PROGRESS` until every container says `stopped` (or
    /// `running`).
    pub stack_status: StackStatus,
    /// Follow it with `GET /v3/tasks/{task_id}`.
    pub task_id: String,
}

async fn hold(
    state: AppState,
    operator: Operator,
    stack_id: String,
    stopped: bool,
) -> ApiResult<(StatusCode, Json<HoldResponse>)> {
    let stack = load_owned_stack(&state, &operator, &stack_id)?;
    let held = state
        .stacks()
        .set_stopped(&stack, operator.actor(), stopped)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(HoldResponse {
            status: "success".into(),
            stack_id: stack.stack_id,
            stack_status: held.stack_status,
            task_id: held.task_id,
        }),
    ))
}

/// Stops every container of the stack and keeps them stopped (through
/// agent restarts, reconnects and clean-ups) until the stack is started;
/// a new version meanwhile is recorded, not started. Containers report
/// `stopped`.
#[utoipa::path(post, path = "/v3/alm/stack/{stack_id}/stop", tag = "stacks",
    security(("bearer" = [])),
    params(("stack_id" = String, Path, description = "Stack id")),
    responses(
        (status = 202, description = "Stopping", body = HoldResponse),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot stop stacks", body = ErrorBody),
        (status = 404, description = "No such stack", body = ErrorBody),
        (status = 409, description = "The stack is being deleted", body = ErrorBody),
    ))]
pub async fn stop(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(stack_id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<HoldResponse>)> {
    hold(state, operator, stack_id, true).await
}

/// Starts a stopped stack: every container runs its latest version again.
#[utoipa::path(post, path = "/v3/alm/stack/{stack_id}/start", tag = "stacks",
    security(("bearer" = [])),
    params(("stack_id" = String, Path, description = "Stack id")),
    responses(
        (status = 202, description = "Starting", body = HoldResponse),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot start stacks", body = ErrorBody),
        (status = 404, description = "No such stack", body = ErrorBody),
        (status = 409, description = "The stack is being deleted", body = ErrorBody),
    ))]
pub async fn start(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(stack_id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<HoldResponse>)> {
    hold(state, operator, stack_id, false).await
}
