//! Stacks: list, describe, delete, and the per-instance container view.

use super::caller::{Caller, Operator};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiPath, ApiQuery};
use super::pages::{PageQuery, Paged, Pager};
use super::state::AppState;
use crate::clock;
use crate::store::{InstanceStatusRecord, StackRecord, StackStatus};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// A stack as Mobingi describes it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StackView {
    pub auth_token: String,
    pub user_id: String,
    /// The latest template body.
    #[schema(value_type = Object)]
    pub configuration: Value,
    /// Three words, easier to say than the id.
    pub nickname: String,
    /// RFC 3339.
    pub create_time: String,
    pub username: String,
    pub stack_id: String,
    pub stack_status: StackStatus,
    pub version_id: String,
    /// Why the stack is in a `*_FAILED` state, or what an `*_IN_PROGRESS`
    /// stack waits for (no agent in its pool, ...), when there is a reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_status_reason: Option<String>,
    /// The pool each configuration runs in, resolved when the version was
    /// stored.
    #[serde(default)]
    pub pools: Vec<ConfigurationPool>,
    /// Stopped by its operator (`POST .../stop`) until started.
    #[serde(default)]
    pub stopped: bool,
}

/// Where one configuration runs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConfigurationPool {
    pub flag: String,
    pub pool: String,
}

/// Answer to a delete.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeleteResponse {
    pub status: String,
    pub stack_id: String,
    pub stack_status: StackStatus,
    /// The task that succeeds once the stack is gone (`GET /v3/tasks/{id}`).
    pub task_id: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Include stacks whose deletion completed.
    #[serde(default)]
    pub include_deleted: bool,
}

/// The stack if it exists and `operator` may see it; 404 otherwise (another
/// user's stack is indistinguishable from a missing one).
pub(super) fn load_owned_stack(
    state: &AppState,
    operator: &Operator,
    stack_id: &str,
) -> ApiResult<StackRecord> {
    state
        .store
        .stack(stack_id)?
        .filter(|stack| operator.owns(stack))
        .ok_or_else(|| ApiError::not_found("stack_id", stack_id))
}

/// Like [`load_owned_stack`], for callers that may also be the stack itself.
pub(super) fn load_visible_stack(
    state: &AppState,
    caller: &Caller,
    stack_id: &str,
) -> ApiResult<StackRecord> {
    state
        .store
        .stack(stack_id)?
        .filter(|stack| caller.may_use(stack))
        .ok_or_else(|| ApiError::not_found("stack_id", stack_id))
}

fn view(state: &AppState, stack: StackRecord) -> ApiResult<StackView> {
    let version = state.stacks().latest(&stack)?;
    let mut configuration = crate::stacks::versions::stored_body(&version)?;
    crate::stacks::config_vars::redact(&mut configuration);
    let pools = configuration
        .get("configurations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("flag").and_then(Value::as_str))
        .map(|flag| ConfigurationPool {
            flag: flag.to_owned(),
            pool: version.pool_of(flag).to_owned(),
        })
        .collect();
    Ok(StackView {
        pools,
        stopped: stack.stopped,
        auth_token: stack.auth_token,
        user_id: stack.user_id,
        configuration,
        nickname: stack.nickname,
        create_time: clock::rfc3339_secs(stack.create_time_ms),
        username: stack.username,
        stack_id: stack.stack_id,
        stack_status: stack.stack_status,
        version_id: stack.latest_version_id,
        stack_status_reason: stack.status_reason,
    })
}

/// Lists the caller's stacks (all stacks for an admin).
#[utoipa::path(get, path = "/v3/alm/stack", tag = "stacks", operation_id = "list_stacks",
    security(("bearer" = [])),
    params(ListQuery, PageQuery),
    responses(
        (status = 200, description = "Stacks, oldest first", body = Vec<StackView>, headers(
            ("X-Total-Count" = usize, description = "Items in the whole list"),
            ("Link" = String, description = "`rel=\"next\"` and `rel=\"prev\"` pages, when there are"),
        )),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot list stacks", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    operator: Operator,
    ApiQuery(query): ApiQuery<ListQuery>,
    pager: Pager,
) -> ApiResult<Paged<StackView>> {
    let mut stacks: Vec<StackRecord> = state
        .store
        .stacks()?
        .into_iter()
        .filter(|stack| operator.owns(stack))
        .filter(|stack| query.include_deleted || stack.stack_status != StackStatus::DeleteComplete)
        .collect();
    // The order the views show: creation second, then id.
    stacks.sort_by(|a, b| {
        (a.create_time_ms.div_euclid(1000), &a.stack_id)
            .cmp(&(b.create_time_ms.div_euclid(1000), &b.stack_id))
    });
    let page = pager.of(stacks);
    page.try_map(|stack| view(&state, stack))
}

/// Lists stacks (the reference's POST form of the same call).
#[utoipa::path(post, path = "/v3/alm/stack", tag = "stacks", operation_id = "list_stacks_post",
    security(("bearer" = [])),
    params(ListQuery, PageQuery),
    responses(
        (status = 200, description = "Stacks, oldest first", body = Vec<StackView>, headers(
            ("X-Total-Count" = usize, description = "Items in the whole list"),
            ("Link" = String, description = "`rel=\"next\"` and `rel=\"prev\"` pages, when there are"),
        )),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot list stacks", body = ErrorBody),
    ))]
pub async fn list_post(
    state: State<AppState>,
    operator: Operator,
    query: ApiQuery<ListQuery>,
    pager: Pager,
) -> ApiResult<Paged<StackView>> {
    list(state, operator, query, pager).await
}

/// Describes one stack.
#[utoipa::path(get, path = "/v3/alm/stack/{stack_id}", tag = "stacks", operation_id = "describe_stack",
    security(("bearer" = [])),
    params(("stack_id" = String, Path, description = "Stack id")),
    responses(
        (status = 200, description = "The stack", body = StackView),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot describe stacks", body = ErrorBody),
        (status = 404, description = "No such stack", body = ErrorBody),
    ))]
pub async fn describe(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(stack_id): ApiPath<String>,
) -> ApiResult<Json<StackView>> {
    let stack = load_owned_stack(&state, &operator, &stack_id)?;
    Ok(Json(view(&state, stack)?))
}

/// Describes one stack (the reference's POST form of the same call).
#[utoipa::path(post, path = "/v3/alm/stack/{stack_id}", tag = "stacks", operation_id = "describe_stack_post",
    security(("bearer" = [])),
    params(("stack_id" = String, Path, description = "Stack id")),
    responses(
        (status = 200, description = "The stack", body = StackView),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot describe stacks", body = ErrorBody),
        (status = 404, description = "No such stack", body = ErrorBody),
    ))]
pub async fn describe_post(
    state: State<AppState>,
    operator: Operator,
    path: ApiPath<String>,
) -> ApiResult<Json<StackView>> {
    describe(state, operator, path).await
}

/// Deletes a stack: it goes `DELETE_IN_PROGRESS` and completes once its
/// containers are gone (at once while nothing is placed). Repeating the
/// call is harmless.
#[utoipa::path(delete, path = "/v3/alm/stack/{stack_id}", tag = "stacks",
    security(("bearer" = [])),
    params(("stack_id" = String, Path, description = "Stack id")),
    responses(
        (status = 202, description = "Deletion started", body = DeleteResponse),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot delete stacks", body = ErrorBody),
        (status = 404, description = "No such stack", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(stack_id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<DeleteResponse>)> {
    let stack = load_owned_stack(&state, &operator, &stack_id)?;
    let deleted = state.stacks().delete(&stack, operator.actor()).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(DeleteResponse {
            status: "success".into(),
            stack_id,
            stack_status: deleted.status,
            task_id: deleted.task_id,
        }),
    ))
}

/// The last reported container status of each instance of a stack.
#[utoipa::path(get, path = "/v3/alm/stack/{stack_id}/containers", tag = "stacks",
    security(("bearer" = [])),
    params(("stack_id" = String, Path, description = "Stack id")),
    responses(
        (status = 200, description = "One entry per instance", body = Vec<InstanceStatusRecord>),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot read this", body = ErrorBody),
        (status = 404, description = "No such stack", body = ErrorBody),
    ))]
pub async fn containers(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(stack_id): ApiPath<String>,
) -> ApiResult<Json<Vec<InstanceStatusRecord>>> {
    load_owned_stack(&state, &operator, &stack_id)?;
    Ok(Json(state.store.instance_statuses(&stack_id)?))
}
