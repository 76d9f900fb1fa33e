//! ALM templates: apply, update, compare, versions, describe, and the
//! per-flag container config that VM agents read.

use super::caller::{Caller, Operator};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::pages::{PageQuery, Paged, Pager};
use super::stacks::{load_owned_stack, load_visible_stack};
use super::state::AppState;
use crate::clock;
use crate::stacks::versions::stored_body;
use crate::stacks::{config_vars, Released};
use crate::store::StackStatus;
use crate::template::{self, diff};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

/// Answer to apply and update.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApplyResponse {
    /// Always `success`.
    pub status: String,
    pub stack_status: StackStatus,
    pub template_id: String,
    pub version_id: String,
    /// The task that settles with this version (`GET /v3/tasks/{id}`).
    pub task_id: String,
}

impl ApplyResponse {
    /// The answer for a version just stored.
    pub fn of(released: Released) -> Self {
        ApplyResponse {
            status: "success".into(),
            stack_status: released.stack.stack_status,
            template_id: released.stack.stack_id,
            version_id: released.version_id,
            task_id: released.task_id,
        }
    }
}

/// One version in the version list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionInfo {
    pub version_id: String,
    pub latest: bool,
    /// RFC 3339 with milliseconds and `Z`.
    pub last_modified: String,
    /// Bytes of the stored body, as a string (as in the reference).
    pub size: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionsQuery {
    /// The id returned when the template was applied. Required: the
    /// handler refuses it missing or empty (400) with its own message.
    #[param(required = true, min_length = 1)]
    pub template_id: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DescribeQuery {
    /// A version id; empty or `latest` for the newest.
    pub version_id: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FlagQuery {
    /// The `flag` of a configuration in the template; required and not
    /// empty (the handler says so in its own words).
    #[param(required = true, min_length = 1)]
    pub flag: Option<String>,
}

/// A version reference in a compare request: `{"<template_id>": {"version": "<version_id>"}}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct VersionRef {
    pub version: Option<String>,
}

/// Compare request: exactly one of `id` (two template versions) or `body`
/// (two template bodies; JSON text holding one is taken too). The "one
/// of" is added to the document by `schemas::install`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CompareRequest {
    /// Two items, each `{"<template_id>": {"version": "<version_id>"}}`.
    #[schema(min_items = 2, max_items = 2, value_type = Option<Vec<VersionItem>>)]
    pub id: Option<Vec<std::collections::BTreeMap<String, VersionRef>>>,
    #[schema(min_items = 2, max_items = 2, value_type = Option<Vec<Object>>)]
    pub body: Option<Vec<Value>>,
}

/// One side of an `id` compare: exactly one template id and its version
/// (document only; the handler reads a map and checks it has one entry).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct VersionItem(std::collections::BTreeMap<String, VersionRef>);

/// Compare answer: both bodies and what changed between them.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompareResponse {
    pub status: String,
    #[schema(value_type = Object)]
    pub source: Value,
    #[schema(value_type = Object)]
    pub target: Value,
    /// `new`, `removed` and `edited`, keyed by slash-separated paths; an
    /// empty section is `[]`.
    #[schema(value_type = Object)]
    pub diff: diff::Diff,
}

/// Applies a template: validates it, stores version 1 and creates the stack.
#[utoipa::path(post, path = "/v3/alm/template", tag = "templates",
    security(("bearer" = [])),
    request_body(content = Object, description = "An ALM template body", content_type = "application/json"),
    responses(
        (status = 201, description = "Stack created", body = ApplyResponse),
        (status = 400, description = "Malformed JSON or an invalid template (every problem listed)", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot apply templates; a pool the owner may not use; `policy_denied`; `container_section_too_large`", body = ErrorBody),
        (status = 409, description = "`duplicate_flag`: two configurations with one flag; `unknown_pool`: a pool that does not exist", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub async fn apply(
    State(state): State<AppState>,
    operator: Operator,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<ApplyResponse>)> {
    let released = state.stacks().create(operator.actor(), body).await?;
    Ok((StatusCode::CREATED, Json(ApplyResponse::of(released))))
}

/// Updates a template: stores a new version (keeping the stack's vendor)
/// and starts rolling it out.
#[utoipa::path(put, path = "/v3/alm/template/{template_id}", tag = "templates",
    security(("bearer" = [])),
    params(("template_id" = String, Path, description = "Template (stack) id")),
    request_body(content = Object, description = "An ALM template body; its `vendor` is ignored", content_type = "application/json"),
    responses(
        (status = 202, description = "New version stored, update in progress", body = ApplyResponse),
        (status = 400, description = "Malformed JSON or an invalid template", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot update templates; a pool the owner may not use; `policy_denied`; `container_section_too_large`", body = ErrorBody),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 409, description = "The stack is being deleted; `duplicate_flag`; `unknown_pool`: a pool that does not exist", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(template_id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<ApplyResponse>)> {
    let stack = load_owned_stack(&state, &operator, &template_id)?;
    let released = state
        .stacks()
        .update(&stack, operator.actor(), body)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(ApplyResponse::of(released))))
}

/// Lists a template's versions, newest first.
#[utoipa::path(get, path = "/v3/alm/template", tag = "templates",
    security(("bearer" = [])),
    params(VersionsQuery, PageQuery),
    responses(
        (status = 200, description = "Versions, newest first", body = Vec<VersionInfo>, headers(
            ("X-Total-Count" = usize, description = "Items in the whole list"),
            ("Link" = String, description = "`rel=\"next\"` and `rel=\"prev\"` pages, when there are"),
        )),
        (status = 400, description = "template_id missing, or a bad limit", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot list versions", body = ErrorBody),
        (status = 404, description = "No such template", body = ErrorBody),
    ))]
pub async fn versions(
    State(state): State<AppState>,
    operator: Operator,
    ApiQuery(query): ApiQuery<VersionsQuery>,
    pager: Pager,
) -> ApiResult<Paged<VersionInfo>> {
    let template_id = query
        .template_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::bad_request("invalid_query", "template_id is required"))?;
    let stack = load_owned_stack(&state, &operator, &template_id)?;
    let mut versions = state.store.versions(&template_id)?;
    versions.reverse();
    Ok(pager.of(versions).map(|version| VersionInfo {
        latest: version.seq == stack.latest_seq,
        last_modified: clock::rfc3339_ms(version.created_ms),
        size: version.body.len().to_string(),
        version_id: version.version_id,
    }))
}

/// Returns the body of one template version.
#[utoipa::path(get, path = "/v3/alm/template/{template_id}", tag = "templates",
    security(("bearer" = [])),
    params(("template_id" = String, Path, description = "Template (stack) id"), DescribeQuery),
    responses(
        (status = 200, description = "The template body, as stored", body = Object),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot read templates", body = ErrorBody),
        (status = 404, description = "No such template or version", body = ErrorBody),
    ))]
pub async fn describe(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(template_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<DescribeQuery>,
) -> ApiResult<Json<Value>> {
    let stack = load_owned_stack(&state, &operator, &template_id)?;
    let version = state
        .stacks()
        .find_version(&stack, query.version_id.as_deref())?;
    let mut body = stored_body(&version)?;
    config_vars::redact(&mut body);
    Ok(Json(body))
}

/// The `container` section of one configuration, with `updated` (when its
/// version was stored, Unix seconds). VM agents call this with the stack's
/// token.
#[utoipa::path(get, path = "/v3/alm/template/{template_id}/container", tag = "agent",
    security(("bearer" = [])),
    params(("template_id" = String, Path, description = "Template (stack) id"), FlagQuery),
    responses(
        (status = 200, description = "The container section plus `updated`", body = Object),
        (status = 400, description = "flag missing", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 404, description = "No such template, flag, or no container section", body = ErrorBody),
    ))]
pub async fn container(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(template_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<FlagQuery>,
) -> ApiResult<Json<Value>> {
    let flag = query
        .flag
        .filter(|flag| !flag.is_empty())
        .ok_or_else(|| ApiError::bad_request("invalid_query", "flag is required"))?;
    let stack = load_visible_stack(&state, &caller, &template_id)?;
    let version = state.stacks().latest(&stack)?;
    let body = stored_body(&version)?;
    let config =
        template::configuration(&body, &flag).ok_or_else(|| ApiError::not_found("flag", &flag))?;
    let mut container: Map<String, Value> = config
        .get("container")
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("configuration {flag:?} has no container section"),
            )
            .context(json!({ "flag": flag }))
        })?;
    // Operators see secrets redacted; the stack's own agents get them.
    if matches!(caller.0, crate::store::Principal::Client { .. }) {
        config_vars::redact_container(&mut container);
    }
    container.insert(
        "updated".into(),
        json!(clock::unix_secs(version.created_ms)),
    );
    Ok(Json(Value::Object(container)))
}

/// Resolves one side of a compare request.
fn compare_side(
    state: &AppState,
    operator: &Operator,
    item: &std::collections::BTreeMap<String, VersionRef>,
) -> ApiResult<Value> {
    let mut entries = item.iter();
    let (Some((template_id, reference)), None) = (entries.next(), entries.next()) else {
        return Err(ApiError::bad_request(
            "invalid_field",
            "each id item must be {\"<template_id>\": {\"version\": \"<version_id>\"}}",
        ));
    };
    let stack = load_owned_stack(state, operator, template_id)?;
    let version = state
        .stacks()
        .find_version(&stack, reference.version.as_deref())?;
    let mut body = stored_body(&version)?;
    config_vars::redact(&mut body);
    Ok(body)
}

fn body_side(index: usize, item: Value) -> ApiResult<Value> {
    match item {
        // Clients of the reference send bodies as JSON text too; the text
        // must hold an object, as a template is one.
        Value::String(text) => match serde_json::from_str(&text) {
            Ok(Value::Object(body)) => Ok(Value::Object(body)),
            _ => Err(ApiError::bad_request(
                "invalid_field",
                format!("body[{index}] is not a JSON template (an object)"),
            )
            .context(json!({ "path": format!("body[{index}]") }))),
        },
        Value::Object(_) => Ok(item),
        other => Err(ApiError::bad_request(
            "invalid_field",
            format!("body[{index}] must be a template object or a JSON string, not {other}"),
        )
        .context(json!({ "path": format!("body[{index}]") }))),
    }
}

/// Compares two template versions, or two template bodies.
#[utoipa::path(post, path = "/v3/alm/template/compare", tag = "templates",
    security(("bearer" = [])),
    request_body(content = CompareRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Source, target and diff", body = CompareResponse),
        (status = 400, description = "Neither or both of id/body, not exactly two items, malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot compare templates", body = ErrorBody),
        (status = 404, description = "No such template or version", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub async fn compare(
    State(state): State<AppState>,
    operator: Operator,
    ApiJson(request): ApiJson<CompareRequest>,
) -> ApiResult<(StatusCode, Json<CompareResponse>)> {
    let two = |n: usize, what: &str| {
        if n == 2 {
            Ok(())
        } else {
            Err(ApiError::bad_request(
                "invalid_field",
                format!("{what} must hold exactly two items (source and target), got {n}"),
            )
            .context(json!({ "path": what })))
        }
    };
    let (source, target) = match (request.id, request.body) {
        (Some(ids), None) => {
            two(ids.len(), "id")?;
            (
                compare_side(&state, &operator, &ids[0])?,
                compare_side(&state, &operator, &ids[1])?,
            )
        }
        (None, Some(bodies)) => {
            two(bodies.len(), "body")?;
            let mut bodies = bodies.into_iter().enumerate().map(|(i, b)| body_side(i, b));
            let source = bodies.next().unwrap_or(Ok(Value::Null))?;
            let target = bodies.next().unwrap_or(Ok(Value::Null))?;
            (source, target)
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_field",
                "give exactly one of id (two template versions) or body (two template bodies)",
            ))
        }
    };
    let diff = diff::diff(&source, &target);
    Ok((
        StatusCode::ACCEPTED,
        Json(CompareResponse {
            status: "success".into(),
            source,
            target,
            diff,
        }),
    ))
}
