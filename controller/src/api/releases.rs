//! Releases: scale, rollback and config vars. Each makes the stack's next
//! version from one it already has (the Akkeris formation, release and
//! config operations), through the same path as an update.

use super::caller::Operator;
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath};
use super::stacks::load_owned_stack;
use super::state::AppState;
use super::templates::ApplyResponse;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// One configuration's new instance count.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FormationItem {
    /// The `flag` of a configuration of the stack.
    #[schema(min_length = 1)]
    pub flag: String,
    /// How many instances it runs from now on (0 stops them all).
    #[schema(minimum = 0)]
    pub instance_count: u64,
}

/// A rollback: which version's body to run again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// A version of this template; absent or empty: the one before the
    /// latest.
    #[serde(default)]
    pub version_id: Option<String>,
}

/// Sets instance counts: a new version equal to the latest except for
/// those counts.
#[utoipa::path(patch, path = "/v3/alm/stack/{stack_id}/formation", tag = "stacks",
    security(("bearer" = [])),
    params(("stack_id" = String, Path, description = "Stack id")),
    request_body(content = Vec<FormationItem>, content_type = "application/json"),
    responses(
        (status = 202, description = "New version stored, update in progress", body = ApplyResponse),
        (status = 400, description = "Malformed JSON or no item", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot scale; the pools or their policies refuse the new version", body = ErrorBody),
        (status = 404, description = "No such stack", body = ErrorBody),
        (status = 409, description = "unknown_flag: the stack has no configuration with that flag; duplicate_flag: a flag given twice; or the stack is being deleted", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub async fn formation(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(stack_id): ApiPath<String>,
    ApiJson(items): ApiJson<Vec<FormationItem>>,
) -> ApiResult<(StatusCode, Json<ApplyResponse>)> {
    let stack = load_owned_stack(&state, &operator, &stack_id)?;
    let counts = items
        .into_iter()
        .map(|item| (item.flag, item.instance_count))
        .collect();
    let released = state
        .stacks()
        .scale(&stack, operator.actor(), counts)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(ApplyResponse::of(released))))
}

/// Rolls a stack back: a new version whose body is an earlier version's
/// (the stack's vendor kept). History is never rewritten.
#[utoipa::path(post, path = "/v3/alm/template/{template_id}/rollback", tag = "templates",
    security(("bearer" = [])),
    params(("template_id" = String, Path, description = "Template (stack) id")),
    request_body(content = RollbackRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "New version stored, update in progress", body = ApplyResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot roll back; the pools or their policies refuse that body now", body = ErrorBody),
        (status = 404, description = "No such template, or no such version of it", body = ErrorBody),
        (status = 409, description = "No version before the latest, the version is the latest, or the stack is being deleted", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub async fn rollback(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(template_id): ApiPath<String>,
    ApiJson(request): ApiJson<RollbackRequest>,
) -> ApiResult<(StatusCode, Json<ApplyResponse>)> {
    let stack = load_owned_stack(&state, &operator, &template_id)?;
    let released = state
        .stacks()
        .rollback(&stack, operator.actor(), request.version_id.as_deref())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(ApplyResponse::of(released))))
}

/// The environment variables of one configuration, as a flat object;
/// the ones its `secret_variables` lists are `"[redacted]"`.
#[utoipa::path(get, path = "/v3/alm/stack/{stack_id}/config/{flag}", tag = "stacks",
    security(("bearer" = [])),
    params(
        ("stack_id" = String, Path, description = "Stack id"),
        ("flag" = String, Path, description = "A configuration's flag"),
    ),
    responses(
        (status = 200, description = "Name to value, secrets redacted", body = Object),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot read config vars", body = ErrorBody),
        (status = 404, description = "No such stack or flag, or the stack is deleted", body = ErrorBody),
    ))]
pub async fn config_get(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath((stack_id, flag)): ApiPath<(String, String)>,
) -> ApiResult<Json<Map<String, Value>>> {
    let stack = load_owned_stack(&state, &operator, &stack_id)?;
    Ok(Json(state.stacks().config(&stack, &flag)?))
}

/// Sets (`"KEY": "value"`) and removes (`"KEY": null`) environment
/// variables of one configuration in one new version.
#[utoipa::path(patch, path = "/v3/alm/stack/{stack_id}/config/{flag}", tag = "stacks",
    security(("bearer" = [])),
    params(
        ("stack_id" = String, Path, description = "Stack id"),
        ("flag" = String, Path, description = "A configuration's flag"),
    ),
    request_body(content = Object, description = "Names to values (string, number or boolean) to set, or to null to remove", content_type = "application/json"),
    responses(
        (status = 202, description = "New version stored, update in progress", body = ApplyResponse),
        (status = 400, description = "Malformed JSON, no variable, a bad name or value", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot change config vars; the section grows past the limit; a policy refuses it", body = ErrorBody),
        (status = 404, description = "No such stack or flag", body = ErrorBody),
        (status = 409, description = "The configuration has no container section, or the stack is being deleted", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub async fn config_set(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath((stack_id, flag)): ApiPath<(String, String)>,
    ApiJson(changes): ApiJson<Map<String, Value>>,
) -> ApiResult<(StatusCode, Json<ApplyResponse>)> {
    let stack = load_owned_stack(&state, &operator, &stack_id)?;
    let released = state
        .stacks()
        .set_config(&stack, operator.actor(), &flag, &changes)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(ApplyResponse::of(released))))
}
