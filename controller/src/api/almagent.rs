//! The calls the original Go alm-agent makes, answered as the Mobingi API
//! did, so VMs still running it can be managed by Flotilla: its config
//! lookup (flat `container_*` keys) and its form-encoded status reports.

use super::caller::AgentCaller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiQuery, JsonOrForm};
use super::report_rules::{self, AlmVerdict};
use super::state::AppState;
use crate::clock;
use crate::stacks::versions::stored_body;
use crate::store::{AlmIdOutcome, StackRecord};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StsQuery {
    /// The stack the VM belongs to. Both are required and not empty (the
    /// handler refuses them together, in the alm-agent's words).
    #[param(required = true, min_length = 1)]
    pub stack_id: Option<String>,
    /// The cloud service the credentials are for (the alm-agent asks for
    /// `logs`).
    #[param(required = true, min_length = 1)]
    pub service: Option<String>,
}

/// Temporary cloud credentials as the alm-agent reads them. Flotilla
/// hands out none: every field is empty.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct StsToken {
    #[serde(rename = "AccessKeyID")]
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: String,
}

/// The alm-agent asks for temporary cloud credentials (for shipping its
/// logs to the cloud) before every config read, and stops if it gets none.
/// Flotilla holds no cloud account to issue them from, so it answers with
/// empty credentials: the agent goes on, and its log shipping stays off.
#[utoipa::path(get, path = "/v3/alm/sts", tag = "agent",
    security(("bearer" = [])),
    params(StsQuery),
    responses(
        (status = 200, description = "Empty credentials: Flotilla issues no cloud credentials", body = StsToken),
        (status = 400, description = "stack_id or service missing", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such stack (for this caller)", body = ErrorBody),
    ))]
pub async fn sts(
    State(state): State<AppState>,
    caller: AgentCaller,
    ApiQuery(query): ApiQuery<StsQuery>,
) -> ApiResult<Json<StsToken>> {
    let (Some(stack_id), Some(_service)) = (
        query.stack_id.filter(|s| !s.is_empty()),
        query.service.filter(|s| !s.is_empty()),
    ) else {
        return Err(ApiError::bad_request(
            "invalid_query",
            "stack_id and service are required",
        ));
    };
    stack_for(&state, &caller, &stack_id)?;
    Ok(Json(StsToken {
        access_key_id: String::new(),
        secret_access_key: String::new(),
        session_token: String::new(),
        expiration: String::new(),
    }))
}

/// Both are required and not empty (refused together by the handler).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConfigQuery {
    #[param(required = true, min_length = 1)]
    pub stack_id: Option<String>,
    #[param(required = true, min_length = 1)]
    pub flag: Option<String>,
}

/// A status report as the alm-agent posts it (form-encoded).
#[derive(Debug, Deserialize, ToSchema)]
pub struct AlmStatus {
    pub stack_id: String,
    #[serde(default)]
    #[schema(pattern = r"^([A-Za-z0-9._:-]{1,128})?$")]
    pub agent_id: Option<String>,
    /// The VM's instance id; when empty, the agent pinned to the stack,
    /// else `agent_id` names the VM (409 when none of them does).
    #[serde(default)]
    #[schema(pattern = r"^([A-Za-z0-9._:-]{1,128})?$")]
    pub instance_id: String,
    /// The configuration the VM runs, when the agent says; its
    /// `instance_count` then bounds the ids reported for it (else the
    /// stack's total).
    #[serde(default)]
    pub flag: Option<String>,
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,32}$")]
    pub status: String,
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub message: Option<String>,
}

fn stack_for(state: &AppState, caller: &AgentCaller, stack_id: &str) -> ApiResult<StackRecord> {
    state
        .store
        .stack(stack_id)?
        .filter(|stack| caller.0.may_use(stack))
        .ok_or_else(|| ApiError::not_found("stack_id", stack_id))
}

fn text(container: &Map<String, Value>, key: &str) -> Value {
    container
        .get(key)
        .filter(|v| v.is_string())
        .cloned()
        .unwrap_or(Value::String(String::new()))
}

/// Container ports as the alm-agent wants them: plain numbers.
fn ports(container: &Map<String, Value>) -> Vec<u16> {
    container
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|port| match port {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::String(s) => s
                .split('/')
                .next()
                .and_then(|mapping| mapping.rsplit(':').next())
                .and_then(|p| p.parse().ok()),
            _ => None,
        })
        .collect()
}

/// A flag's container config in the alm-agent's keys; `{}` for an unknown
/// flag (as Mobingi answered).
#[utoipa::path(get, path = "/v3/alm/agent/config", tag = "agent",
    security(("bearer" = [])),
    params(ConfigQuery),
    responses(
        (status = 200, description = "container_image, container_registry_username, container_registry_password, container_code_dir, container_git_repo, container_git_reference, container_git_private_key, container_ports, container_updated, container_env_vars; {} for an unknown flag", body = Object),
        (status = 400, description = "stack_id or flag missing", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such stack (for this caller)", body = ErrorBody),
    ))]
pub async fn config(
    State(state): State<AppState>,
    caller: AgentCaller,
    ApiQuery(query): ApiQuery<ConfigQuery>,
) -> ApiResult<Json<Value>> {
    let (Some(stack_id), Some(flag)) = (
        query.stack_id.filter(|s| !s.is_empty()),
        query.flag.filter(|f| !f.is_empty()),
    ) else {
        return Err(ApiError::bad_request(
            "invalid_query",
            "stack_id and flag are required",
        ));
    };
    let stack = stack_for(&state, &caller, &stack_id)?;
    let version = state.stacks().latest(&stack)?;
    let mut body = stored_body(&version)?;
    // Operators see secret variables redacted; the stack's agents get them.
    if matches!(caller.0 .0, crate::store::Principal::Client { .. }) {
        crate::stacks::config_vars::redact(&mut body);
    }
    let created: Vec<i64> = state
        .store
        .versions(&stack.stack_id)?
        .iter()
        .map(|v| v.created_ms)
        .collect();
    let Some(container) = crate::template::configuration(&body, &flag)
        .and_then(|config| config.get("container"))
        .and_then(Value::as_object)
    else {
        return Ok(Json(json!({})));
    };
    let registry = container
        .get("registry")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let env: Map<String, Value> = container
        .get("environment_variables")
        .and_then(Value::as_object)
        .map(|vars| {
            vars.iter()
                .map(|(k, v)| {
                    let text = crate::stacks::config_vars::env_text(v);
                    (k.clone(), Value::String(text))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(json!({
        "container_image": text(container, "image"),
        "container_registry_username": text(&registry, "username"),
        "container_registry_password": text(&registry, "password"),
        "container_code_dir": text(container, "codeDir"),
        "container_git_repo": text(container, "gitRepo"),
        "container_git_reference": text(container, "gitReference"),
        "container_git_private_key": text(container, "gitPrivateKey"),
        "container_ports": ports(container),
        "container_updated": updated_secs(&created),
        "container_env_vars": env,
    })))
}

/// `container_updated` of the newest version, given every version's
/// creation time (oldest first): its Unix seconds, but always above the
/// previous version's value, so two versions stored within one second
/// still differ (the alm-agent applies a config only when this grows).
pub fn updated_secs(created_ms: &[i64]) -> i64 {
    created_ms.iter().fold(0, |previous, &ms| {
        clock::unix_secs(ms).max(previous.saturating_add(1))
    })
}

/// The instance of the one live agent pinned to `stack_id`, if exactly one
/// is: what a report that names no instance is about (the alm-agent leaves
/// `instance_id` out when it has no metadata service).
pub(super) fn pinned_instance(state: &AppState, stack_id: &str) -> ApiResult<Option<String>> {
    let mut pinned = state.store.agents()?.into_iter().filter(|agent| {
        agent.state != crate::store::AgentState::Revoked
            && agent
                .pin
                .as_ref()
                .is_some_and(|pin| pin.stack_id == stack_id)
    });
    Ok(match (pinned.next(), pinned.next()) {
        (Some(only), None) => Some(only.instance_id.clone()),
        _ => None,
    })
}

/// The id a report names its VM by: the instance id, else the instance
/// pinned to the stack, else the agent id.
fn vm_id(state: &AppState, report: &AlmStatus) -> ApiResult<String> {
    if !report.instance_id.is_empty() {
        return Ok(report.instance_id.clone());
    }
    if let Some(pinned) = pinned_instance(state, &report.stack_id)? {
        return Ok(pinned);
    }
    Ok(report.agent_id.clone().unwrap_or_default())
}

fn check_report(report: &AlmStatus, id: &str) -> ApiResult<()> {
    let word = |s: &str| {
        (1..=32).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    };
    if !word(&report.status) {
        return Err(
            ApiError::bad_request("invalid_field", "status must be a short word")
                .context(json!({"path": "status"})),
        );
    }
    if id.is_empty() {
        return Err(ApiError::conflict(
            "no instance named: give instance_id (no single agent is pinned to the stack, and no agent_id)",
        )
        .context(json!({"path": "instance_id"})));
    }
    if !crate::fleet::enroll::valid_instance_id(id) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "instance_id (or, without it, agent_id) is not a valid instance id",
        )
        .context(json!({"path": "instance_id"})));
    }
    if report
        .message
        .as_ref()
        .is_some_and(|m| m.chars().count() > 1024)
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            "message is longer than 1024 characters",
        )
        .context(json!({"path": "message"})));
    }
    Ok(())
}

/// Whether an alm-agent report about VM `id` is taken (see
/// [`report_rules::alm_verdict`]): an id an enrolled agent holds only when
/// that agent runs the stack (404 otherwise); any other id only while the
/// stack (or the flag) has fewer distinct alm-agent ids than its
/// `instance_count` (409 `instance_limit` for one more).
fn admit(state: &AppState, stack: &StackRecord, id: &str, flag: Option<&str>) -> ApiResult<()> {
    let holder = super::report_rules::holder(&state.store, &stack.stack_id, id)?;
    match report_rules::alm_verdict(holder.map(|h| h.1)) {
        AlmVerdict::Enrolled => return Ok(()),
        AlmVerdict::NotFound => return Err(ApiError::not_found("instance_id", id)),
        AlmVerdict::Counted => {}
    }
    let body = state.stacks().latest_body(stack)?;
    let limit = crate::template::instance_count(&body, flag)
        .ok_or_else(|| ApiError::not_found("flag", flag.unwrap_or_default()))?;
    let key = format!("{}\0{}", stack.stack_id, flag.unwrap_or_default());
    match state.store.take_alm_id(&key, id, limit)? {
        AlmIdOutcome::Taken => Ok(()),
        AlmIdOutcome::Full { limit } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "instance_limit",
            format!(
                "stack {} already has {limit} instances reporting; its instance_count allows no more",
                stack.stack_id
            ),
        )
        .context(json!({ "stack_id": stack.stack_id, "flag": flag, "limit": limit }))),
    }
}

async fn record(
    state: &AppState,
    caller: &AgentCaller,
    report: AlmStatus,
    kind: &'static str,
) -> ApiResult<Json<Value>> {
    let stack = stack_for(state, caller, &report.stack_id)?;
    let id = vm_id(state, &report)?;
    check_report(&report, &id)?;
    admit(state, &stack, &id, report.flag.as_deref())?;
    if kind == crate::reports::CONTAINER_STATUS {
        let recorded = crate::reports::Report {
            stack_id: stack.stack_id.clone(),
            instance_id: id.clone(),
            status: report.status.clone(),
            flag: None,
            exit_code: None,
            reason: report.message.clone(),
            time_ms: clock::now_ms(),
            version_id: None,
            agent_id: report.agent_id.clone(),
            commit: None,
            seq: 0,
            source: crate::reports::Source::AlmAgent,
        };
        crate::reports::record(&state.store, recorded).await?;
    } else {
        let event = crate::events::Event::AlmAgentStatus {
            status: &report.status,
            message: report.message.as_deref(),
            agent_id: report.agent_id.as_deref(),
        };
        crate::reports::record_event(&state.store, &event, &stack.stack_id, &id).await?;
    }
    tracing::info!(stack_id = %stack.stack_id, instance_id = %id, status = %report.status, kind, "alm-agent report");
    // The agent takes only 200 with a JSON body as delivered.
    Ok(Json(json!({})))
}

/// The alm-agent's report about itself.
#[utoipa::path(post, path = "/v3/alm/agent/agent_status", tag = "agent",
    security(("bearer" = [])),
    request_body(content = AlmStatus, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Recorded: `{}` (the alm-agent counts nothing else as delivered)", body = Object),
        (status = 400, description = "Missing or invalid field", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such stack (for this caller), or an instance an enrolled agent holds that does not run the stack", body = ErrorBody),
        (status = 409, description = "instance_limit: the stack already has instance_count instances reporting", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Neither form-encoded nor JSON", body = ErrorBody),
    ))]
pub async fn agent_status(
    State(state): State<AppState>,
    caller: AgentCaller,
    JsonOrForm(report): JsonOrForm<AlmStatus>,
) -> ApiResult<Json<Value>> {
    record(&state, &caller, report, "agent.status").await
}

/// The alm-agent's report about its container; shown in the stack's
/// containers view.
#[utoipa::path(post, path = "/v3/alm/agent/container_status", tag = "agent",
    security(("bearer" = [])),
    request_body(content = AlmStatus, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Recorded: `{}` (the alm-agent counts nothing else as delivered)", body = Object),
        (status = 400, description = "Missing or invalid field", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such stack (for this caller), or an instance an enrolled agent holds that does not run the stack", body = ErrorBody),
        (status = 409, description = "instance_limit: the stack already has instance_count instances reporting", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Neither form-encoded nor JSON", body = ErrorBody),
    ))]
pub async fn container_status(
    State(state): State<AppState>,
    caller: AgentCaller,
    JsonOrForm(report): JsonOrForm<AlmStatus>,
) -> ApiResult<Json<Value>> {
    record(&state, &caller, report, "container.status").await
}

#[cfg(test)]
mod tests {
    use super::updated_secs;

    #[test]
    fn container_updated_grows_with_every_version() {
        let base = 1_800_000_000_000;
        for (created, expected) in [
            (vec![], 0),
            (vec![base], 1_800_000_000),
            (vec![base, base + 10], 1_800_000_001),
            (vec![base, base + 10, base + 20], 1_800_000_002),
            (vec![base, base + 5_000], 1_800_000_005),
            // A clock that went back still gives a larger value.
            (vec![base, base - 60_000], 1_800_000_001),
        ] {
            assert_eq!(updated_secs(&created), expected, "{created:?}");
        }
    }
}
