//! Pools of agents (`/v3/alm/pools`): admins create them and say who may
//! use them and what containers there may ask of the host.

use super::caller::Operator;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath};
use super::state::AppState;
use crate::clock;
use crate::events::PoolChange;
use crate::pools::{self, Blocker};
use crate::store::{AgentState, PoolRecord, DEFAULT_POOL};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use flotilla_common::policy::Policy;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

/// Most users one pool lists.
const MAX_USERS: usize = 1000;

/// A pool to create, or a pool's new users and policy. The document's
/// `CreatePool` is this with `name` required (`schemas::install`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolRequest {
    /// 1-63 lowercase letters, digits or '-', starting with a letter or
    /// digit (`pools::valid_name`). Required on create; on update, when
    /// given, the path's name (a pool cannot be renamed: 409).
    #[schema(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")]
    pub name: Option<String>,
    /// Usernames that may place stacks here and create its join tokens.
    #[serde(default)]
    #[schema(max_items = 1000, inline, value_type = Vec<super::admin::Username>)]
    pub users: Vec<String>,
    /// What containers here may ask of the host; everything is refused
    /// unless allowed.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub policy: Policy,
}

/// A pool as listed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PoolView {
    pub name: String,
    pub users: Vec<String>,
    #[schema(value_type = Object)]
    pub policy: Policy,
    /// Agents enrolled in it (revoked ones not counted).
    pub agents: usize,
    /// RFC 3339.
    pub created: String,
    pub updated: String,
}

/// Live (not revoked) agents per pool, from one read of the agents.
fn agents_per_pool(state: &AppState) -> ApiResult<std::collections::HashMap<String, usize>> {
    let mut counts = std::collections::HashMap::new();
    for agent in state.store.agents()? {
        if agent.state != AgentState::Revoked {
            *counts.entry(agent.pool.clone()).or_default() += 1;
        }
    }
    Ok(counts)
}

fn view_with(pool: PoolRecord, counts: &std::collections::HashMap<String, usize>) -> PoolView {
    PoolView {
        agents: counts.get(&pool.name).copied().unwrap_or(0),
        created: clock::rfc3339_ms(pool.created_ms),
        updated: clock::rfc3339_ms(pool.updated_ms),
        name: pool.name,
        users: pool.users,
        policy: pool.policy,
    }
}

fn view(state: &AppState, pool: PoolRecord) -> ApiResult<PoolView> {
    Ok(view_with(pool, &agents_per_pool(state)?))
}

/// Checks the users and policy of a request; every problem is listed.
fn check(users: &[String], policy: &Policy) -> ApiResult<()> {
    let mut problems: Vec<(String, String)> = Vec::new();
    if users.len() > MAX_USERS {
        problems.push(("/users".into(), format!("at most {MAX_USERS} users")));
    }
    for (index, user) in users.iter().enumerate() {
        if let Err(message) = crate::auth::clients::check_username(user) {
            problems.push((format!("/users/{index}"), message));
        }
    }
    for problem in policy.problems() {
        problems.push((format!("/policy{}", problem.path), problem.message));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut error = ApiError::bad_request("invalid_field", "the pool is invalid");
    error.errors = problems
        .into_iter()
        .map(|(path, message)| super::error::ErrorDetail {
            code: "invalid_field".into(),
            message,
            context: json!({ "path": path }),
        })
        .collect();
    Err(error)
}

/// Records a pool change as an event and in the audit trail (admins see
/// both) and makes them durable.
async fn record(
    state: &AppState,
    kind: PoolChange,
    pool: &str,
    by: &Operator,
    at_ms: i64,
    changes: serde_json::Value,
) -> ApiResult<()> {
    use crate::audit::Action;
    let action = match kind {
        PoolChange::Created => Action::PoolCreate,
        PoolChange::Updated => Action::PoolUpdate,
        PoolChange::Deleted => Action::PoolDelete,
    };
    let event = crate::events::Event::Pool {
        kind,
        pool,
        by: &by.username,
    };
    state.store.record(&event, None, None, at_ms)?;
    let record = crate::audit::Record {
        action,
        target: pool,
        stack_id: None,
        instance_id: None,
        changes,
    };
    state.audit(by, record)?;
    state.store.flush().await?;
    Ok(())
}

fn dedup(mut users: Vec<String>) -> Vec<String> {
    users.sort();
    users.dedup();
    users
}

/// Creates a pool (admin).
#[utoipa::path(post, path = "/v3/alm/pools", tag = "pools",
    security(("bearer" = [])),
    request_body(content = PoolRequest, content_type = "application/json",
        description = "`CreatePool`: `name` is required"),
    responses(
        (status = 201, description = "Pool created", body = PoolView),
        (status = 400, description = "Invalid name, user or policy, or malformed body", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "A pool of that name exists", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    operator: Operator,
    ApiJson(request): ApiJson<PoolRequest>,
) -> ApiResult<(StatusCode, Json<PoolView>)> {
    operator.require_admin("creating a pool")?;
    let name = request.name.clone().unwrap_or_default();
    if !pools::valid_name(&name) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "name must be 1-63 lowercase letters, digits or '-', starting with a letter or digit",
        )
        .context(json!({ "path": "/name" })));
    }
    check(&request.users, &request.policy)?;
    let now = clock::now_ms();
    let pool = PoolRecord {
        name: name.clone(),
        users: dedup(request.users),
        policy: request.policy,
        created_ms: now,
        updated_ms: now,
    };
    if !state.store.create_pool(&pool)? {
        return Err(ApiError::conflict(format!("pool {name} already exists"))
            .context(json!({ "pool": name })));
    }
    let changes = json!({ "users": pool.users });
    record(&state, PoolChange::Created, &name, &operator, now, changes).await?;
    tracing::info!(pool = %name, users = pool.users.len(), "pool created");
    Ok((StatusCode::CREATED, Json(view(&state, pool)?)))
}

/// Lists pools: every pool for an admin, the pools that list the caller
/// otherwise.
#[utoipa::path(get, path = "/v3/alm/pools", tag = "pools",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Pools, oldest first", body = Vec<PoolView>),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot list pools", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    operator: Operator,
) -> ApiResult<Json<Vec<PoolView>>> {
    let counts = agents_per_pool(&state)?;
    let views = state
        .store
        .pools()?
        .into_iter()
        .filter(|pool| pools::may_use(pool, &operator.username, operator.admin))
        .map(|pool| view_with(pool, &counts))
        .collect();
    Ok(Json(views))
}

/// A pool the caller may see (an admin, or a user it lists); 404 for
/// others, as for a missing one.
fn load_visible(state: &AppState, operator: &Operator, name: &str) -> ApiResult<PoolRecord> {
    state
        .store
        .pool(name)?
        .filter(|pool| pools::may_use(pool, &operator.username, operator.admin))
        .ok_or_else(|| ApiError::not_found("pool", name))
}

/// One pool.
#[utoipa::path(get, path = "/v3/alm/pools/{name}", tag = "pools",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Pool name")),
    responses(
        (status = 200, description = "The pool", body = PoolView),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot read pools", body = ErrorBody),
        (status = 404, description = "No such pool (or not one the caller may use)", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<PoolView>> {
    let pool = load_visible(&state, &operator, &name)?;
    Ok(Json(view(&state, pool)?))
}

fn blocked(message: &str, blockers: Vec<Blocker>) -> ApiError {
    let stacks: Vec<&str> = blockers.iter().map(|b| b.stack_id.as_str()).collect();
    let mut error = ApiError::conflict(format!("{message}: {}", stacks.join(", ")));
    error.errors = blockers
        .iter()
        .map(|b| super::error::ErrorDetail {
            code: "conflict".into(),
            message: b.reason.clone(),
            context: json!({ "stack_id": b.stack_id }),
        })
        .collect();
    error
}

/// Replaces a pool's users and policy (admin). Refused (409, listing the
/// stacks in the way, nothing changed) when it would remove a user who has
/// stacks in the pool or forbid what their containers use.
#[utoipa::path(put, path = "/v3/alm/pools/{name}", tag = "pools",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Pool name")),
    request_body(content = PoolRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Pool updated", body = PoolView),
        (status = 400, description = "Invalid user or policy, or malformed body", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
        (status = 409, description = "Stacks in the pool stand in the way, or a `name` other than the path's", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<PoolRequest>,
) -> ApiResult<Json<PoolView>> {
    operator.require_admin("changing a pool")?;
    if request.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::conflict("a pool cannot be renamed")
            .context(json!({ "path": "/name", "pool": name })));
    }
    check(&request.users, &request.policy)?;
    let old = state
        .store
        .pool(&name)?
        .ok_or_else(|| ApiError::not_found("pool", &name))?;
    let new = PoolRecord {
        users: dedup(request.users),
        policy: request.policy,
        updated_ms: clock::now_ms(),
        ..old.clone()
    };
    let running = state.stacks().running_in_pool(&name)?;
    let in_pool: Vec<pools::rules::InPool<'_>> = running
        .iter()
        .map(|r| pools::rules::InPool {
            stack_id: &r.stack_id,
            owner: &r.owner,
            flag: &r.flag,
            violations: r.violations(&new.policy),
        })
        .collect();
    let found = pools::blockers(&old, &new, &in_pool);
    if !found.is_empty() {
        return Err(blocked(
            &format!("pool {name} is not changed; stacks in the way"),
            found,
        ));
    }
    if !state.store.replace_pool(&old, &new)? {
        return Err(ApiError::conflict(format!(
            "pool {name} changed meanwhile; read it again and retry"
        )));
    }
    let changes = json!({
        "users_added": new.users.iter().filter(|u| !old.users.contains(u)).collect::<Vec<_>>(),
        "users_removed": old.users.iter().filter(|u| !new.users.contains(u)).collect::<Vec<_>>(),
        "policy_changed": new.policy != old.policy,
    });
    record(
        &state,
        PoolChange::Updated,
        &name,
        &operator,
        new.updated_ms,
        changes,
    )
    .await?;
    state.nudge();
    tracing::info!(pool = %name, users = new.users.len(), "pool updated");
    Ok(Json(view(&state, new)?))
}

/// Deletes a pool (admin): refused (409) for the built-in pool, while
/// agents are enrolled in it, and while stacks run there.
#[utoipa::path(delete, path = "/v3/alm/pools/{name}", tag = "pools",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Pool name")),
    responses(
        (status = 200, description = "Pool deleted", body = PoolView),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
        (status = 409, description = "Built in, or agents or stacks are in it", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<PoolView>> {
    operator.require_admin("deleting a pool")?;
    let pool = state
        .store
        .pool(&name)?
        .ok_or_else(|| ApiError::not_found("pool", &name))?;
    if name == DEFAULT_POOL {
        return Err(ApiError::conflict(
            "the built-in pool default cannot be deleted",
        ));
    }
    let shown = view(&state, pool.clone())?;
    if shown.agents > 0 {
        return Err(ApiError::conflict(format!(
            "pool {name} still has {} agent(s); revoke them first",
            shown.agents
        ))
        .context(json!({ "pool": name, "agents": shown.agents })));
    }
    let running = state.stacks().running_in_pool(&name)?;
    if !running.is_empty() {
        let found = running
            .iter()
            .map(|r| Blocker {
                stack_id: r.stack_id.clone(),
                reason: format!("{} of stack {} runs in pool {name}", r.flag, r.stack_id),
            })
            .collect();
        return Err(blocked(&format!("pool {name} still has stacks"), found));
    }
    if !state.store.delete_pool(&pool)? {
        return Err(ApiError::conflict(format!(
            "pool {name} changed meanwhile; read it again and retry"
        )));
    }
    record(
        &state,
        PoolChange::Deleted,
        &name,
        &operator,
        clock::now_ms(),
        json!({}),
    )
    .await?;
    tracing::info!(pool = %name, "pool deleted");
    Ok(Json(shown))
}
