//! Fleet endpoints: join tokens for enrolling VMs, and the agents' state
//! for fleet tooling.

use super::caller::Operator;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};
use super::pages::{PageQuery, Paged, Pager};
use super::stacks::load_owned_stack;
use super::state::AppState;
use crate::clock;
use crate::fleet::drain::{self, DrainError};
use crate::fleet::join_tokens::{self, JoinTokenInfo, NewJoinToken};
use crate::store::{AgentRecord, AgentState, DrainReason, Pin, DEFAULT_POOL};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use flotilla_common::wire::messages::HostFacts;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use utoipa::ToSchema;

/// A join token request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// Lifetime in seconds (default 86400, at most 30 days).
    #[schema(minimum = 1, maximum = 2_592_000)]
    pub ttl_secs: Option<u64>,
    /// How many VMs may enroll with it (default 1, at most 10000).
    #[schema(minimum = 1, maximum = 10_000)]
    pub max_uses: Option<u32>,
    /// Pin the enrolled agents to this stack's configuration `flag`
    /// (both or neither).
    pub stack_id: Option<String>,
    pub flag: Option<String>,
    /// The pool the agents join (default `default`; for a pinned token,
    /// the pool its configuration runs in).
    pub pool: Option<String>,
    /// Let the token enroll an instance id that a live agent holds,
    /// replacing that agent's identity (admins only).
    #[serde(default)]
    pub replace: bool,
}

/// One placement of an agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlacementView {
    pub stack_id: String,
    pub flag: String,
    pub version_id: String,
}

/// What fleet tooling reads first: the connection state, unless a drain
/// says more.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentViewState {
    Enrolled,
    Connected,
    Lost,
    Revoked,
    /// The cloud announced the VM's end; its work is moving.
    Terminating,
    /// An operator (or a rebalance) is emptying it.
    Draining,
    /// Every container is stopped.
    Drained,
}

/// A drain, as fleet tooling sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DrainView {
    /// `spot`, `rebalance` or `operator`.
    pub reason: DrainReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud: Option<String>,
    /// The cloud's action: `terminate`, `stop`, `hibernate`, `preempt`,
    /// `maintenance` or `rebalance`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// When the VM goes, or when the drain stops waiting (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    pub since: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drained: Option<String>,
}

/// An agent as fleet tooling sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    pub agent_id: String,
    pub instance_id: String,
    pub hostname: String,
    /// The pool it was enrolled into (for life).
    pub pool: String,
    /// `enrolled`, `connected`, `lost`, `revoked`, `terminating`,
    /// `draining` or `drained`.
    pub state: AgentViewState,
    /// The link alone: `enrolled`, `connected`, `lost` or `revoked`.
    pub connection: AgentState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainView>,
    /// When the cloud last recommended moving work off it (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_risk_since: Option<String>,
    /// When the state last changed (RFC 3339).
    pub state_since: String,
    /// Last message from the agent (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    pub enrolled: String,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<Pin>,
    /// CPU count and load, memory, disk, uptime, agent version.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub facts: Option<HostFacts>,
    pub placements: Vec<PlacementView>,
    /// Generation of the desired state the controller holds for it.
    pub generation: u64,
    /// Generation the agent has acknowledged.
    pub applied_generation: u64,
}

/// What fleet tooling reads first: the link state, unless a drain says
/// more (a lost or revoked agent shows that, drain or not).
pub fn view_state(agent: &AgentRecord) -> AgentViewState {
    match (agent.state, &agent.drain) {
        (AgentState::Revoked, _) => AgentViewState::Revoked,
        (AgentState::Lost, _) => AgentViewState::Lost,
        (_, Some(drain)) if drain.drained_ms.is_some() => AgentViewState::Drained,
        (_, Some(drain)) if drain.reason == DrainReason::Spot => AgentViewState::Terminating,
        (_, Some(_)) => AgentViewState::Draining,
        (AgentState::Enrolled, None) => AgentViewState::Enrolled,
        (AgentState::Connected, None) => AgentViewState::Connected,
    }
}

impl AgentViewState {
    /// Every state, for metrics that show zeros too.
    pub const ALL: [AgentViewState; 7] = [
        AgentViewState::Enrolled,
        AgentViewState::Connected,
        AgentViewState::Lost,
        AgentViewState::Revoked,
        AgentViewState::Terminating,
        AgentViewState::Draining,
        AgentViewState::Drained,
    ];

    /// The name in JSON and metrics.
    pub fn name(self) -> &'static str {
        match self {
            AgentViewState::Enrolled => "enrolled",
            AgentViewState::Connected => "connected",
            AgentViewState::Lost => "lost",
            AgentViewState::Revoked => "revoked",
            AgentViewState::Terminating => "terminating",
            AgentViewState::Draining => "draining",
            AgentViewState::Drained => "drained",
        }
    }
}

fn view(state: &AppState, agent: AgentRecord) -> ApiResult<AgentView> {
    let desired = state.store.desired(&agent.agent_id)?;
    let state_now = view_state(&agent);
    let live = state.fleet.registry.snapshot(&agent.agent_id);
    let (last_seen, facts) = match live {
        Some((seen, facts)) => {
            let ago = i64::try_from(seen.elapsed().as_millis()).unwrap_or(0);
            (Some(clock::now_ms() - ago), facts.or(agent.facts))
        }
        None => (agent.last_seen_ms, agent.facts),
    };
    Ok(AgentView {
        agent_id: agent.agent_id,
        instance_id: agent.instance_id,
        hostname: agent.hostname,
        pool: agent.pool,
        state: state_now,
        connection: agent.state,
        drain: agent.drain.map(|d| DrainView {
            reason: d.reason,
            cloud: d.cloud,
            action: d.action,
            deadline: d.deadline_ms.map(clock::rfc3339_ms),
            since: clock::rfc3339_ms(d.since_ms),
            drained: d.drained_ms.map(clock::rfc3339_ms),
        }),
        at_risk_since: agent.at_risk_ms.map(clock::rfc3339_ms),
        state_since: clock::rfc3339_ms(agent.state_since_ms),
        last_seen: last_seen.map(clock::rfc3339_ms),
        enrolled: clock::rfc3339_ms(agent.enrolled_ms),
        labels: agent.labels,
        pin: agent.pin,
        facts,
        placements: desired
            .placements
            .iter()
            .map(|p| PlacementView {
                stack_id: p.stack_id.clone(),
                flag: p.flag.clone(),
                version_id: p.version_id.clone(),
            })
            .collect(),
        generation: desired.generation,
        applied_generation: agent.acked_generation,
    })
}

/// Creates a join token for enrolling VMs into a pool. Admins may create
/// tokens for any pool; a user listed in a pool, for that pool only (and
/// tokens pinned to their own stacks, which join the stack's pool).
#[utoipa::path(post, path = "/v3/alm/agent/join-token", tag = "fleet",
    security(("bearer" = [])),
    request_body(content = CreateJoinToken, content_type = "application/json"),
    responses(
        (status = 201, description = "Token created; its secret is shown this once", body = NewJoinToken),
        (status = 400, description = "Invalid field or malformed body", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A pool the caller may not use, or `replace` without admin rights", body = ErrorBody),
        (status = 404, description = "No such stack, flag or pool", body = ErrorBody),
        (status = 409, description = "A `pool` other than the one the pinned configuration runs in", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub async fn create_join_token(
    State(state): State<AppState>,
    operator: Operator,
    ApiJson(request): ApiJson<CreateJoinToken>,
) -> ApiResult<(StatusCode, Json<NewJoinToken>)> {
    let ttl = request
        .ttl_secs
        .unwrap_or(join_tokens::DEFAULT_TTL.as_secs());
    if !(1..=30 * 86_400).contains(&ttl) {
        return Err(
            ApiError::bad_request("invalid_field", "ttl_secs must be 1..2592000")
                .context(json!({"path": "ttl_secs"})),
        );
    }
    let max_uses = request.max_uses.unwrap_or(1);
    if !(1..=10_000).contains(&max_uses) {
        return Err(
            ApiError::bad_request("invalid_field", "max_uses must be 1..10000")
                .context(json!({"path": "max_uses"})),
        );
    }
    if request.replace {
        operator.require_admin("a join token that replaces enrolled instances")?;
    }
    let (pin, pool) = match (request.stack_id, request.flag) {
        (Some(stack_id), Some(flag)) => {
            let stack = load_owned_stack(&state, &operator, &stack_id)?;
            let version = state.stacks().latest(&stack)?;
            let body = crate::stacks::versions::stored_body(&version)?;
            crate::template::configuration(&body, &flag)
                .ok_or_else(|| ApiError::not_found("flag", &flag))?;
            let pool = version.pool_of(&flag).to_owned();
            if request.pool.as_ref().is_some_and(|asked| *asked != pool) {
                return Err(ApiError::conflict(
                    format!("{flag} of stack {stack_id} runs in pool {pool}; a token pinned to it joins that pool"),
                )
                .context(json!({"path": "pool", "pool": pool})));
            }
            (Some(Pin { stack_id, flag }), pool)
        }
        (None, None) => (
            None,
            request.pool.unwrap_or_else(|| DEFAULT_POOL.to_owned()),
        ),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_field",
                "give both stack_id and flag to pin, or neither",
            ))
        }
    };
    let record = state
        .store
        .pool(&pool)?
        .ok_or_else(|| ApiError::not_found("pool", &pool))?;
    if !crate::pools::may_use(&record, &operator.username, operator.admin) {
        return Err(ApiError::forbidden(format!(
            "user {} may not create join tokens for pool {pool}",
            operator.username
        ))
        .context(json!({ "pool": pool })));
    }
    let now = clock::now_ms();
    let mine = state
        .store
        .join_tokens()?
        .iter()
        .filter(|t| t.user_id == operator.user_id && join_tokens::is_active(t, now))
        .count();
    state.admit(crate::quotas::Quota::JoinTokensPerUser, mine)?;
    let token = join_tokens::create(
        &state.store,
        &state.fleet.pki.ca_fingerprint,
        &operator.user_id,
        join_tokens::JoinTokenOptions {
            ttl: Duration::from_secs(ttl),
            max_uses,
            pin,
            pool,
            replace: request.replace,
        },
    )?;
    let record = crate::audit::Record {
        action: crate::audit::Action::JoinTokenCreate,
        target: &token.id,
        stack_id: token.stack_id.as_deref(),
        instance_id: None,
        changes: json!({
            "pool": token.pool,
            "flag": token.flag,
            "max_uses": token.max_uses,
            "expires": token.expires,
            "replace": token.replace,
        }),
    };
    state.audit(&operator, record)?;
    state.store.flush().await?;
    Ok((StatusCode::CREATED, Json(token)))
}

/// Lists join tokens (an admin sees all; others see their own).
#[utoipa::path(get, path = "/v3/alm/agent/join-token", tag = "fleet",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Join tokens, without secrets", body = Vec<JoinTokenInfo>),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot list join tokens", body = ErrorBody),
    ))]
pub async fn list_join_tokens(
    State(state): State<AppState>,
    operator: Operator,
) -> ApiResult<Json<Vec<JoinTokenInfo>>> {
    Ok(Json(join_tokens::list(
        &state.store,
        &operator.user_id,
        operator.admin,
    )?))
}

/// Revokes a join token: it enrolls no more VMs (agents already enrolled
/// keep their identity).
#[utoipa::path(delete, path = "/v3/alm/agent/join-token/{id}", tag = "fleet",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Join token id (jt-...)")),
    responses(
        (status = 200, description = "Revoked", body = JoinTokenInfo),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot revoke join tokens", body = ErrorBody),
        (status = 404, description = "No such join token", body = ErrorBody),
    ))]
pub async fn revoke_join_token(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JoinTokenInfo>> {
    let revoked = join_tokens::revoke(&state.store, &id, &operator.user_id, operator.admin)?
        .ok_or_else(|| ApiError::not_found("join_token", &id))?;
    let record = crate::audit::Record {
        action: crate::audit::Action::JoinTokenRevoke,
        target: &revoked.id,
        stack_id: revoked.stack_id.as_deref(),
        instance_id: None,
        changes: json!({ "pool": revoked.pool }),
    };
    state.audit(&operator, record)?;
    state.store.flush().await?;
    Ok(Json(revoked))
}

/// Records an operator's action on an agent: the agent is the target, its
/// instance named, and its pinned stack's owner sees it too.
fn audit_agent(
    state: &AppState,
    operator: &Operator,
    action: crate::audit::Action,
    agent: &AgentRecord,
    mut changes: serde_json::Value,
) -> ApiResult<()> {
    if let Some(changes) = changes.as_object_mut() {
        changes.insert("pool".into(), json!(agent.pool));
    }
    let record = crate::audit::Record {
        action,
        target: &agent.agent_id,
        stack_id: agent.pin.as_ref().map(|p| p.stack_id.as_str()),
        instance_id: Some(&agent.instance_id),
        changes,
    };
    state.audit(operator, record)?;
    Ok(())
}

/// Lists every agent with its state, facts and placements (admin).
#[utoipa::path(get, path = "/v3/alm/agents", tag = "fleet",
    security(("bearer" = [])),
    params(AgentsQuery, PageQuery),
    responses(
        (status = 200, description = "Agents", body = Vec<AgentView>, headers(
            ("X-Total-Count" = usize, description = "Items in the whole list"),
            ("Link" = String, description = "`rel=\"next\"` and `rel=\"prev\"` pages, when there are"),
        )),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub async fn list_agents(
    State(state): State<AppState>,
    operator: Operator,
    ApiQuery(query): ApiQuery<AgentsQuery>,
    pager: Pager,
) -> ApiResult<Paged<AgentView>> {
    operator.require_admin("the agent list")?;
    let agents = state
        .store
        .agents()?
        .into_iter()
        .filter(|agent| query.include_revoked || agent.state != AgentState::Revoked)
        .collect();
    pager
        .of(agents)
        .try_map(|agent| view(&state, AgentRecord::clone(&agent)))
}

/// Which agents to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentsQuery {
    /// Include revoked agents (removed from the fleet).
    #[serde(default)]
    pub include_revoked: bool,
}

/// Removes an agent from the fleet (admin): its certificate stops working
/// at once (its connection is closed and it cannot reconnect), its
/// placements move to other agents, and it leaves the agent list (kept as
/// `revoked`, see `include_revoked`). For VMs that are gone for good; a
/// VM that should come back re-enrolls with a join token.
#[utoipa::path(delete, path = "/v3/alm/agents/{agent_id}", tag = "fleet",
    security(("bearer" = [])),
    params(("agent_id" = String, Path, description = "Agent id (ag-...)")),
    responses(
        (status = 200, description = "Revoked", body = AgentView),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
    ))]
pub async fn revoke_agent(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(agent_id): ApiPath<String>,
) -> ApiResult<Json<AgentView>> {
    operator.require_admin("removing an agent")?;
    let now = clock::now_ms();
    let mut changed = false;
    let agent = state
        .store
        .update_agent(&agent_id, |agent| {
            changed = agent.state != AgentState::Revoked;
            if changed {
                agent.state = AgentState::Revoked;
                agent.state_since_ms = now;
            }
        })?
        .ok_or_else(|| ApiError::not_found("agent_id", &agent_id))?;
    if changed {
        let event = crate::events::Event::AgentRevoked {
            agent_id: &agent.agent_id,
            by: &operator.username,
        };
        state.store.record(
            &event,
            agent.pin.as_ref().map(|p| p.stack_id.as_str()),
            Some(&agent.instance_id),
            now,
        )?;
        tracing::warn!(agent_id = %agent.agent_id, instance_id = %agent.instance_id, "agent revoked");
        audit_agent(
            &state,
            &operator,
            crate::audit::Action::AgentRevoke,
            &agent,
            json!({}),
        )?;
    }
    state.store.flush().await?;
    state.fleet.registry.disconnect(
        &agent.agent_id,
        flotilla_common::wire::codes::UNAUTHORIZED,
        b"this agent was removed from the fleet",
    );
    state.nudge();
    Ok(Json(view(&state, agent)?))
}

/// One agent (admin).
#[utoipa::path(get, path = "/v3/alm/agents/{agent_id}", tag = "fleet",
    security(("bearer" = [])),
    params(("agent_id" = String, Path, description = "Agent id (ag-...)")),
    responses(
        (status = 200, description = "The agent", body = AgentView),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
    ))]
pub async fn get_agent(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(agent_id): ApiPath<String>,
) -> ApiResult<Json<AgentView>> {
    operator.require_admin("agent details")?;
    let agent = state
        .store
        .agent(&agent_id)?
        .ok_or_else(|| ApiError::not_found("agent_id", &agent_id))?;
    Ok(Json(view(&state, agent)?))
}

/// An operator's drain request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// Stop waiting for replacements after this many seconds (at most 7
    /// days): the agent's containers stop then even if their replacements
    /// do not run. Default: wait for the replacements.
    #[schema(minimum = 1, maximum = 604_800)]
    pub deadline_secs: Option<u64>,
}

impl From<DrainError> for super::error::ApiError {
    fn from(err: DrainError) -> Self {
        match err {
            DrainError::UnknownAgent(id) => ApiError::not_found("agent_id", &id),
            DrainError::CloudNotice(_) => ApiError::conflict(err.to_string()),
            DrainError::Store(err) => err.into(),
        }
    }
}

/// Drains an agent (admin): it takes no new placements, its placements
/// start on other agents, and each of its containers stops gracefully once
/// its replacement runs. Idempotent; a second call changes the deadline.
#[utoipa::path(post, path = "/v3/alm/agents/{agent_id}/drain", tag = "fleet",
    security(("bearer" = [])),
    params(("agent_id" = String, Path, description = "Agent id (ag-...)")),
    request_body(content = DrainRequest, content_type = "application/json",
        description = "Optional."),
    responses(
        (status = 202, description = "Draining", body = AgentView),
        (status = 400, description = "Invalid field or malformed body", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub async fn drain_agent(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(agent_id): ApiPath<String>,
    OptionalJson(request): OptionalJson<DrainRequest>,
) -> ApiResult<(StatusCode, Json<AgentView>)> {
    operator.require_admin("draining an agent")?;
    let deadline_ms = match request.deadline_secs {
        Some(secs) if (1..=7 * 86_400).contains(&secs) => {
            Some(clock::now_ms() + i64::try_from(secs * 1000).unwrap_or(i64::MAX))
        }
        Some(_) => {
            return Err(
                ApiError::bad_request("invalid_field", "deadline_secs must be 1..604800")
                    .context(json!({"path": "deadline_secs"})),
            )
        }
        None => None,
    };
    let agent = drain::start(&state.store, &agent_id, deadline_ms)?;
    audit_agent(
        &state,
        &operator,
        crate::audit::Action::AgentDrain,
        &agent,
        json!({ "deadline_secs": request.deadline_secs }),
    )?;
    state.store.flush().await?;
    state.nudge();
    Ok((StatusCode::ACCEPTED, Json(view(&state, agent)?)))
}

/// Ends a drain: the agent takes placements again. An admin may end any
/// drain, a cloud's termination notice's too (the notice may be false);
/// for anyone else a notice's drain cannot be undone (409).
#[utoipa::path(delete, path = "/v3/alm/agents/{agent_id}/drain", tag = "fleet",
    security(("bearer" = [])),
    params(("agent_id" = String, Path, description = "Agent id (ag-...)")),
    responses(
        (status = 200, description = "Not draining", body = AgentView),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 409, description = "The cloud is terminating the VM (non-admins)", body = ErrorBody),
    ))]
pub async fn undrain_agent(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(agent_id): ApiPath<String>,
) -> ApiResult<Json<AgentView>> {
    operator.require_admin("undoing a drain")?;
    let agent = drain::undo(&state.store, &agent_id, operator.admin)?;
    audit_agent(
        &state,
        &operator,
        crate::audit::Action::AgentUndrain,
        &agent,
        json!({}),
    )?;
    state.store.flush().await?;
    state.nudge();
    Ok(Json(view(&state, agent)?))
}
