//! `GET /v3/tasks/{task_id}`: where an operation answered with 201/202
//! stands (the CloudMC reference's asynchronous operations). Tasks are
//! owner-scoped like their stacks.

use super::caller::Operator;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiPath;
use super::stacks::load_owned_stack;
use super::state::AppState;
use crate::clock;
use crate::store::{TaskRecord, TaskStatus};
use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// A task as the CloudMC reference shows it, with the stack it is about.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    #[serde(rename = "taskId")]
    pub task_id: String,
    #[serde(rename = "taskStatus")]
    pub task_status: TaskStatus,
    /// `apply`, `update`, `formation`, `rollback`, `config` or `delete`.
    pub operation: String,
    pub stack_id: String,
    /// The version the operation made (`null` for a delete).
    pub version_id: Option<String>,
    /// Why it failed: the stack's failure, its deletion, or the version
    /// that superseded it.
    pub reason: Option<String>,
    /// RFC 3339 with milliseconds.
    pub created: String,
    pub finished: Option<String>,
}

impl From<TaskRecord> for TaskView {
    fn from(task: TaskRecord) -> Self {
        TaskView {
            task_id: task.task_id,
            task_status: task.status,
            operation: task.operation,
            stack_id: task.stack_id,
            version_id: task.version_id,
            reason: task.reason,
            created: clock::rfc3339_ms(task.created_ms),
            finished: task.finished_ms.map(clock::rfc3339_ms),
        }
    }
}

/// One task: PENDING until its stack settles on its version everywhere
/// (SUCCESS), fails, is deleted or takes a later version (FAILED, with
/// the reason).
#[utoipa::path(get, path = "/v3/tasks/{task_id}", tag = "stacks",
    security(("bearer" = [])),
    params(("task_id" = String, Path, description = "The task_id a 201/202 answered with")),
    responses(
        (status = 200, description = "The task", body = TaskView),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot read tasks", body = ErrorBody),
        (status = 404, description = "No such task (or another user's)", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(task_id): ApiPath<String>,
) -> ApiResult<Json<TaskView>> {
    let task = state
        .store
        .task(&task_id)?
        .ok_or_else(|| ApiError::not_found("task_id", &task_id))?;
    load_owned_stack(&state, &operator, &task.stack_id)
        .map_err(|_| ApiError::not_found("task_id", &task_id))?;
    Ok(Json(task.into()))
}
