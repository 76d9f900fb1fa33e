//! ALM templates: apply, update, compare, versions, describe, and the
//! per-flag container config that VM agents read.

use super::caller::{Caller, Operator};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::stacks::{load_owned_stack, load_visible_stack};
use super::state::AppState;
use crate::clock;
use crate::pools::PoolChoice;
use crate::store::{StackRecord, StackStatus, VersionOutcome, VersionRecord};
use crate::template::{self, diff, validate};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// Answer to apply and update.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApplyResponse {
    /// Always `success`.
    pub status: String,
    pub stack_status: StackStatus,
    pub template_id: String,
    pub version_id: String,
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

/// Turns validation problems into one 400 listing all of them.
fn invalid(problems: Vec<validate::Problem>) -> ApiError {
    let mut error = ApiError::bad_request("invalid_template", "template is invalid");
    error.errors = problems
        .into_iter()
        .map(|problem| super::error::ErrorDetail {
            code: "invalid_template".into(),
            message: problem.message,
            context: json!({ "path": problem.path }),
        })
        .collect();
    error
}

/// Checks a template body: a malformed one is 400 with every problem
/// (repeated flags too); a well-formed one that names a configuration
/// twice is 409 `duplicate_flag`, each repeat with its pointer.
fn check_template(body: &Value) -> ApiResult<()> {
    let repeats = validate::repeated_flags(body);
    if let Err(mut problems) = validate::validate(body) {
        problems.extend(repeats);
        return Err(invalid(problems));
    }
    if repeats.is_empty() {
        return Ok(());
    }
    Err(refused(
        invalid(repeats),
        StatusCode::CONFLICT,
        "duplicate_flag",
        json!({}),
    ))
}

/// `error` (from [`invalid`]) as a refusal of a well-formed body: another
/// status and code, and `extra` added to every context.
fn refused(mut error: ApiError, status: StatusCode, code: &str, extra: Value) -> ApiError {
    error.status = status;
    for detail in &mut error.errors {
        detail.code = code.into();
        if let (Some(context), Some(extra)) = (detail.context.as_object_mut(), extra.as_object()) {
            context.extend(extra.clone());
        }
    }
    error
}

fn encode_body(body: &Value) -> ApiResult<String> {
    serde_json::to_string(body).map_err(|err| {
        tracing::error!(error = %err, "template body could not be encoded");
        ApiError::internal()
    })
}

/// Parses a stored body. Stored bodies were validated JSON, so a failure
/// here means damage, reported as an internal error.
pub(super) fn stored_body(version: &VersionRecord) -> ApiResult<Value> {
    serde_json::from_str(&version.body).map_err(|err| {
        tracing::error!(stack_id = %version.stack_id, seq = version.seq, error = %err, "stored template body unreadable");
        ApiError::internal()
    })
}

/// The latest version of a stack.
pub(super) fn latest_version(state: &AppState, stack: &StackRecord) -> ApiResult<VersionRecord> {
    state
        .store
        .version_by_seq(&stack.stack_id, stack.latest_seq)?
        .ok_or_else(|| {
            tracing::error!(stack_id = %stack.stack_id, seq = stack.latest_seq, "latest version missing");
            ApiError::internal()
        })
}

/// Refuses (403 `container_section_too_large`, each with its pointer and
/// the limit) container sections larger than `max_container_section`:
/// whatever the stacks, no placement grows past what the fleet link
/// carries. A well-formed section over the operator's limit is refused by
/// policy, not malformed (the document bounds each value, not the total).
fn check_sizes(state: &AppState, body: &Value) -> ApiResult<()> {
    let limit = state.settings.max_container_section;
    let problems: Vec<validate::Problem> = template::configurations(body)
        .iter()
        .enumerate()
        .filter_map(|(index, config)| {
            let size = config.get("container")?.to_string().len();
            (size > limit).then(|| validate::Problem {
                path: format!("/configurations/{index}/container"),
                message: format!(
                    "the container section is {size} bytes; at most {limit} (max_container_section)"
                ),
            })
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(refused(
        invalid(problems),
        StatusCode::FORBIDDEN,
        "container_section_too_large",
        json!({ "limit": limit }),
    ))
}

/// Resolves the pool of every configuration of a (valid) body for the
/// stack's owner (`admin` when an admin client of the owner acts):
/// `provision.pool` when given, else the owner's first pool, else
/// `default` for admins. Unknown pools are 404, pools the owner may not
/// use 403, each naming the configuration.
fn resolve_pools(
    state: &AppState,
    owner: &str,
    admin: bool,
    body: &Value,
) -> ApiResult<BTreeMap<String, String>> {
    let pools = state.store.pools()?;
    let mut resolved = BTreeMap::new();
    for (index, config) in template::configurations(body).iter().enumerate() {
        let Some(flag) = config.get("flag").and_then(Value::as_str) else {
            continue;
        };
        let path = format!("/configurations/{index}/provision/pool");
        let requested = match config.pointer("/provision/pool") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name.as_str()),
            Some(_) => {
                return Err(invalid(vec![validate::Problem {
                    path,
                    message: "pool must be a string naming a pool".into(),
                }]))
            }
        };
        let pool = match crate::pools::resolve(requested, &pools, owner, admin) {
            PoolChoice::Pool(pool) => pool,
            PoolChoice::Unknown(name) => {
                return Err(ApiError::not_found("pool", &name)
                    .context(json!({ "pool": name, "path": path })))
            }
            PoolChoice::Forbidden(name) => {
                return Err(ApiError::forbidden(format!(
                    "user {owner} may not use pool {name}"
                ))
                .context(json!({ "pool": name, "path": path })))
            }
            PoolChoice::NoPool => {
                return Err(ApiError::forbidden(format!(
                    "user {owner} is in no pool; an admin adds users to a pool (PUT /v3/alm/pools/{{name}})"
                ))
                .context(json!({ "path": path })))
            }
        };
        resolved.insert(flag.to_owned(), pool);
    }
    Ok(resolved)
}

/// Refuses (403 `policy_denied`, every violation with its pointer and the
/// pool that forbids it) a body whose containers ask for what their pools
/// do not allow. Nothing is stored then.
fn check_policies(
    state: &AppState,
    body: &Value,
    pools: &BTreeMap<String, String>,
) -> ApiResult<()> {
    let mut found = Vec::new();
    for (index, config) in template::configurations(body).iter().enumerate() {
        let (Some(flag), Some(container)) = (
            config.get("flag").and_then(Value::as_str),
            config.get("container"),
        ) else {
            continue;
        };
        let Some(pool) = pools.get(flag) else {
            continue;
        };
        let policy = state
            .store
            .pool(pool)?
            .map(|p| p.policy)
            .unwrap_or_default();
        let Some(spec) = validate::container_spec(container) else {
            continue;
        };
        for violation in flotilla_common::policy::check(&spec, &policy) {
            found.push(super::error::ErrorDetail {
                code: "policy_denied".into(),
                message: format!("pool {pool} does not allow this: {}", violation.message),
                context: json!({
                    "path": format!("/configurations/{index}/container{}", violation.path),
                    "pool": pool,
                }),
            });
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    let mut error = ApiError::new(
        StatusCode::FORBIDDEN,
        "policy_denied",
        "the pool's container policy forbids this",
    );
    error.errors = found;
    Err(error)
}

/// One configuration of a live stack that runs in a pool, for checks
/// before the pool changes.
pub(super) struct RunningConfig {
    pub stack_id: String,
    pub owner: String,
    pub flag: String,
    pub container: Value,
}

impl RunningConfig {
    /// What `policy` would forbid in its container section, each as
    /// `pointer: message` (pointers within the section).
    pub fn violations(&self, policy: &flotilla_common::policy::Policy) -> Vec<String> {
        match validate::container_spec(&self.container) {
            Some(spec) => flotilla_common::policy::check(&spec, policy)
                .into_iter()
                .map(|v| format!("{}: {}", v.path, v.message))
                .collect(),
            None if self.container.is_null() => Vec::new(),
            None => vec!["the container section does not parse".to_owned()],
        }
    }
}

/// Every configuration of a stack that is not being deleted whose latest
/// version runs in `pool`.
pub(super) fn running_in_pool(state: &AppState, pool: &str) -> ApiResult<Vec<RunningConfig>> {
    let mut found = Vec::new();
    for stack in state.store.stacks()? {
        if stack.stack_status.is_deleting() {
            continue;
        }
        let version = latest_version(state, &stack)?;
        let body = stored_body(&version)?;
        for config in body
            .get("configurations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(flag) = config.get("flag").and_then(Value::as_str) else {
                continue;
            };
            if version.pool_of(flag) == pool {
                found.push(RunningConfig {
                    stack_id: stack.stack_id.clone(),
                    owner: stack.username.clone(),
                    flag: flag.to_owned(),
                    container: config.get("container").cloned().unwrap_or(Value::Null),
                });
            }
        }
    }
    Ok(found)
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
        (status = 404, description = "No such pool", body = ErrorBody),
        (status = 409, description = "`duplicate_flag`: two configurations with one flag", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub async fn apply(
    State(state): State<AppState>,
    operator: Operator,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<ApplyResponse>)> {
    check_template(&body)?;
    check_sizes(&state, &body)?;
    let pools = resolve_pools(&state, &operator.username, operator.admin, &body)?;
    check_policies(&state, &body, &pools)?;
    let owned = state
        .store
        .stacks()?
        .iter()
        .filter(|s| s.user_id == operator.user_id && s.stack_status != StackStatus::DeleteComplete)
        .count();
    state.admit(crate::quotas::Quota::StacksPerUser, owned)?;
    let now = clock::now_ms();
    let stack_id = flotilla_common::ids::template_id(&operator.user_id);
    let version = VersionRecord {
        stack_id: stack_id.clone(),
        seq: 1,
        version_id: flotilla_common::ids::version_id(),
        created_ms: now,
        body: encode_body(&body)?,
        pools,
    };
    let stack = StackRecord {
        stack_id: stack_id.clone(),
        user_id: operator.user_id.clone(),
        username: operator.username.clone(),
        nickname: crate::nickname::generate(),
        auth_token: flotilla_common::ids::random_alphanumeric(crate::auth::secret::STACK_TOKEN_LEN),
        create_time_ms: now,
        stack_status: StackStatus::CreateInProgress,
        status_reason: None,
        vendor: body.get("vendor").cloned(),
        latest_seq: 1,
        latest_version_id: version.version_id.clone(),
        updated_ms: now,
    };
    state.store.create_stack(
        &stack,
        &crate::auth::secret::digest(&stack.auth_token),
        &version,
    )?;
    state.store.append_event(
        "stack.created",
        Some(&stack_id),
        None,
        clock::rfc3339_ms(now),
        json!({ "version_id": version.version_id }),
    )?;
    state.store.flush().await?;
    state.nudge();
    tracing::info!(stack_id = %stack_id, version_id = %version.version_id, "template applied");
    Ok((
        StatusCode::CREATED,
        Json(ApplyResponse {
            status: "success".into(),
            stack_status: stack.stack_status,
            template_id: stack_id,
            version_id: version.version_id,
        }),
    ))
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
        (status = 404, description = "No such template or pool", body = ErrorBody),
        (status = 409, description = "The stack is being deleted; `duplicate_flag`", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(template_id): ApiPath<String>,
    ApiJson(mut body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<ApplyResponse>)> {
    let stack = load_owned_stack(&state, &operator, &template_id)?;
    check_template(&body)?;
    check_sizes(&state, &body)?;
    // The pools are resolved for the stack's owner, whoever updates it.
    let owner_admin = operator.admin && operator.user_id == stack.user_id;
    let pools = resolve_pools(&state, &stack.username, owner_admin, &body)?;
    check_policies(&state, &body, &pools)?;
    template::keep_vendor(&mut body, stack.vendor.as_ref());
    let version_id = flotilla_common::ids::version_id();
    let now = clock::now_ms();
    let outcome = state.store.add_version(
        &template_id,
        &version_id,
        now,
        &encode_body(&body)?,
        &pools,
        StackStatus::UpdateInProgress,
    )?;
    let stack = match outcome {
        VersionOutcome::Added(stack) => stack,
        VersionOutcome::NoStack => return Err(ApiError::not_found("template_id", &template_id)),
        VersionOutcome::Deleting(status) => {
            return Err(ApiError::conflict(format!(
                "stack {template_id} is {status:?} and takes no more updates"
            ))
            .context(json!({ "stack_status": status })))
        }
    };
    state.store.append_event(
        "stack.updated",
        Some(&template_id),
        None,
        clock::rfc3339_ms(now),
        json!({ "version_id": version_id }),
    )?;
    state.store.flush().await?;
    state.nudge();
    tracing::info!(stack_id = %template_id, version_id = %version_id, "template updated");
    Ok((
        StatusCode::ACCEPTED,
        Json(ApplyResponse {
            status: "success".into(),
            stack_status: stack.stack_status,
            template_id,
            version_id,
        }),
    ))
}

/// Lists a template's versions, newest first.
#[utoipa::path(get, path = "/v3/alm/template", tag = "templates",
    security(("bearer" = [])),
    params(VersionsQuery),
    responses(
        (status = 200, description = "Versions, newest first", body = Vec<VersionInfo>),
        (status = 400, description = "template_id missing", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot list versions", body = ErrorBody),
        (status = 404, description = "No such template", body = ErrorBody),
    ))]
pub async fn versions(
    State(state): State<AppState>,
    operator: Operator,
    ApiQuery(query): ApiQuery<VersionsQuery>,
) -> ApiResult<Json<Vec<VersionInfo>>> {
    let template_id = query
        .template_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::bad_request("invalid_query", "template_id is required"))?;
    let stack = load_owned_stack(&state, &operator, &template_id)?;
    let versions = state.store.versions(&template_id)?;
    Ok(Json(
        versions
            .iter()
            .rev()
            .map(|version| VersionInfo {
                version_id: version.version_id.clone(),
                latest: version.seq == stack.latest_seq,
                last_modified: clock::rfc3339_ms(version.created_ms),
                size: version.body.len().to_string(),
            })
            .collect(),
    ))
}

/// Finds a version by id (empty or `latest`: the newest).
fn find_version(
    state: &AppState,
    stack: &StackRecord,
    version_id: Option<&str>,
) -> ApiResult<VersionRecord> {
    match version_id {
        None | Some("") | Some("latest") => latest_version(state, stack),
        Some(id) => state
            .store
            .version(&stack.stack_id, id)?
            .ok_or_else(|| ApiError::not_found("version_id", id)),
    }
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
) -> ApiResult<Response> {
    let stack = load_owned_stack(&state, &operator, &template_id)?;
    let version = find_version(&state, &stack, query.version_id.as_deref())?;
    Ok(([(header::CONTENT_TYPE, "application/json")], version.body).into_response())
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
    let version = latest_version(&state, &stack)?;
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
    let version = find_version(state, &stack, reference.version.as_deref())?;
    stored_body(&version)
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
