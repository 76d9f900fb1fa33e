//! The agent event endpoints (spot notices, container status) for HTTP-only
//! agents, and the event history for operators.

use super::caller::{AgentCaller, NoticeCaller, Operator};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiQuery, JsonOrForm};
use super::pages::{PageQuery, Pager};
use super::report_rules::{self, NoticeVerdict};
use super::state::AppState;
use crate::clock;
use crate::store::{AgentRecord, EventFilter, EventRecord, Principal, StackRecord};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flotilla_common::status::ContainerStatus;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

/// A spot-termination notice from a VM.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SpotShutdown {
    /// Required (403 without it), except with an agent's own REST token.
    #[serde(default)]
    pub stack_id: String,
    /// The VM; when empty (the alm-agent without a metadata service), the
    /// one agent pinned to the stack (409 when there is not exactly one).
    #[serde(default)]
    #[schema(pattern = r"^([A-Za-z0-9._:-]{1,128})?$")]
    pub instance_id: String,
    /// Flotilla agents: the notice's lifecycle report id, so the notice is
    /// recorded once when it also arrives over the fleet link.
    pub notice_id: Option<u64>,
    /// `aws`, `gcp` or `azure`: a short name.
    #[schema(pattern = r"^[A-Za-z0-9-]{0,32}$")]
    pub cloud: Option<String>,
    /// `terminate` (default), `stop`, `hibernate`, `preempt` or `maintenance`.
    #[schema(value_type = Option<NoticeAction>)]
    pub action: Option<String>,
    /// When the cloud acts (RFC 3339).
    #[schema(format = DateTime)]
    pub time: Option<String>,
}

/// What the cloud does to the VM (document only: the handler checks the
/// string against the same list).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum NoticeAction {
    Terminate,
    Stop,
    Hibernate,
    Preempt,
    Maintenance,
}

/// A container status change reported by a VM.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ContainerStatusReport {
    pub stack_id: String,
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,128}$")]
    pub instance_id: String,
    /// `starting`, `updating`, `restarting`, `running`, `stopping`,
    /// `terminated`, `start-failure`, `app-crashed` or `probe-failure`
    /// (the document lists `ContainerStatus::ALL`).
    pub status: String,
    /// The configuration's flag, when the agent knows it.
    pub flag: Option<String>,
    pub exit_code: Option<i64>,
    /// Free text, at most 1024 characters.
    #[schema(max_length = 1024)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this event id (event ids stay below 2^63).
    #[param(maximum = 9_223_372_036_854_775_807_i64)]
    pub since: Option<u64>,
    pub stack_id: Option<String>,
    pub instance_id: Option<String>,
    /// Event type, e.g. `spot.shutdown` or `container.status`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// Stream the events (Server-Sent Events) and keep streaming new ones;
    /// also chosen by `Accept: text/event-stream`. Resumes after the
    /// `Last-Event-ID` header when given.
    pub follow: Option<bool>,
}

fn check_instance_id(instance_id: &str) -> ApiResult<()> {
    let ok = (1..=128).contains(&instance_id.len())
        && instance_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_field",
            "instance_id must be 1-128 letters, digits, '-', '_', '.' or ':'",
        )
        .context(json!({ "path": "instance_id" })))
    }
}

/// The stack an agent reports for, if the caller may report for it: 404
/// for a stack the caller cannot see, 403 for a stack token of another
/// stack.
fn agent_stack(state: &AppState, caller: &AgentCaller, stack_id: &str) -> ApiResult<StackRecord> {
    let stack = state.store.stack(stack_id)?;
    match (&caller.0 .0, stack) {
        (_, Some(stack)) if caller.0.may_use(&stack) => Ok(stack),
        (Principal::Stack { .. }, _) => Err(ApiError::forbidden(format!(
            "this stack's token may not report for stack {stack_id}"
        ))),
        _ => Err(ApiError::not_found("stack_id", stack_id)),
    }
}

/// Records a spot-termination notice for an instance of a stack.
///
/// Who may drain what is [`report_rules::notice_verdict`]: an agent's own
/// REST token drains that agent (with the notice's time); a stack token
/// drains only an agent pinned to its stack, with the server's deadline
/// (the `time` given is ignored); a notice for an instance no enrolled
/// agent holds is recorded as an event.
#[utoipa::path(post, path = "/v3/event/spot/shutdown", tag = "agent",
    security(("bearer" = [])),
    request_body(content = SpotShutdown, content_type = "application/json",
        description = "Also accepted form-encoded. The bearer may be the stack's auth_token, or an enrolled agent's own REST token (then `stack_id` may be left out)."),
    responses(
        (status = 202, description = "Recorded"),
        (status = 400, description = "Missing or invalid field, malformed body", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token belongs to another stack or user, or may not act on that agent; `stack_id` left out by other than an agent's token", body = ErrorBody),
        (status = 404, description = "No such stack", body = ErrorBody),
        (status = 409, description = "`instance_id` left out and not exactly one agent pinned to the stack", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Neither JSON nor form-encoded", body = ErrorBody),
    ))]
pub async fn spot_shutdown(
    State(state): State<AppState>,
    caller: NoticeCaller,
    JsonOrForm(notice): JsonOrForm<SpotShutdown>,
) -> ApiResult<StatusCode> {
    let caller = match caller {
        NoticeCaller::Agent(agent) => {
            check_instance_id(&notice.instance_id)?;
            let cloud_notice = cloud_notice(&notice, true)?;
            if notice.instance_id != agent.instance_id {
                return Err(ApiError::forbidden(
                    "an agent's token speaks for its own instance only",
                ));
            }
            return drain_for_notice(&state, &agent, &cloud_notice, notice.notice_id).await;
        }
        NoticeCaller::Other(caller) => caller,
    };
    if notice.stack_id.is_empty() {
        return Err(ApiError::forbidden(
            "stack_id is required: only an agent's own token may leave it out",
        )
        .context(json!({ "path": "stack_id" })));
    }
    let stack = agent_stack(&state, &caller, &notice.stack_id)?;
    let mut notice = notice;
    if notice.instance_id.is_empty() {
        notice.instance_id = super::almagent::pinned_instance(&state, &stack.stack_id)?
            .ok_or_else(|| {
                ApiError::conflict(format!(
                    "instance_id is required: no single agent is pinned to stack {}",
                    stack.stack_id
                ))
                .context(json!({ "path": "instance_id" }))
            })?;
    }
    check_instance_id(&notice.instance_id)?;
    let holder = report_rules::holder(&state.store, &stack.stack_id, &notice.instance_id)?;
    match report_rules::notice_verdict(&caller.reporter(), holder.as_ref().map(|h| h.1)) {
        NoticeVerdict::Drain { honour_time } => {
            let cloud_notice = cloud_notice(&notice, honour_time)?;
            let Some((agent, _)) = holder else {
                return Err(ApiError::internal());
            };
            drain_for_notice(&state, &agent, &cloud_notice, notice.notice_id).await
        }
        NoticeVerdict::Forbidden => Err(ApiError::forbidden(format!(
            "instance {} is an agent this caller may not drain (only an agent pinned to stack {} is)",
            notice.instance_id, stack.stack_id
        ))),
        NoticeVerdict::EventOnly => {
            cloud_notice(&notice, false)?;
            crate::reports::record_event(
                &state.store,
                &crate::events::Event::SpotNoticeRecorded,
                &stack.stack_id,
                &notice.instance_id,
            )
            .await?;
            state.nudge();
            tracing::warn!(stack_id = %stack.stack_id, instance_id = %notice.instance_id, "spot shutdown notice");
            Ok(StatusCode::ACCEPTED)
        }
    }
}

/// Drains an enrolled agent for a notice taken over HTTP.
async fn drain_for_notice(
    state: &AppState,
    agent: &AgentRecord,
    notice: &flotilla_common::wire::messages::CloudNotice,
    notice_id: Option<u64>,
) -> ApiResult<StatusCode> {
    let applied = crate::fleet::drain::apply_notice(
        &state.store,
        &agent.agent_id,
        notice,
        notice_id,
        crate::fleet::drain::Source::Http,
        state.fleet.settings.drain_on_rebalance,
    )?;
    state.store.flush().await?;
    state.nudge();
    tracing::warn!(agent_id = %agent.agent_id, applied = ?applied, "spot shutdown notice for an enrolled agent");
    Ok(StatusCode::ACCEPTED)
}

/// The notice an HTTP report describes (a bare report is a termination).
/// With `honour_time` false the notice gets the server's deadline: none,
/// so the drain waits for replacements (as for a notice without a time).
fn cloud_notice(
    notice: &SpotShutdown,
    honour_time: bool,
) -> ApiResult<flotilla_common::wire::messages::CloudNotice> {
    const ACTIONS: [&str; 5] = ["terminate", "stop", "hibernate", "preempt", "maintenance"];
    let action = notice.action.clone().unwrap_or_else(|| "terminate".into());
    if !ACTIONS.contains(&action.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("action must be one of {}", ACTIONS.join(", ")),
        )
        .context(json!({ "path": "action" })));
    }
    let cloud = notice.cloud.clone().unwrap_or_else(|| "unknown".into());
    if cloud.len() > 32 || !cloud.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(
            ApiError::bad_request("invalid_field", "cloud must be a short name like aws")
                .context(json!({ "path": "cloud" })),
        );
    }
    let deadline_ms = notice
        .time
        .as_deref()
        .map(|time| {
            chrono::DateTime::parse_from_rfc3339(time)
                .map(|t| t.timestamp_millis())
                .map_err(|_| {
                    ApiError::bad_request("invalid_field", "time must be an RFC 3339 timestamp")
                        .context(json!({ "path": "time" }))
                })
        })
        .transpose()?
        .filter(|_| honour_time);
    Ok(flotilla_common::wire::messages::CloudNotice {
        cloud,
        action,
        deadline_ms,
    })
}

/// Records a container status change for an instance of a stack.
#[utoipa::path(post, path = "/v3/event/container/status", tag = "agent",
    security(("bearer" = [])),
    request_body(content = ContainerStatusReport, content_type = "application/json",
        description = "Also accepted form-encoded. The bearer may be the stack's auth_token."),
    responses(
        (status = 202, description = "Recorded"),
        (status = 400, description = "Missing or invalid field (unknown status), malformed body", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token belongs to another stack or user", body = ErrorBody),
        (status = 404, description = "No such stack, or (stack token) an instance not placed for the stack nor pinned to it", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Neither JSON nor form-encoded", body = ErrorBody),
    ))]
pub async fn container_status(
    State(state): State<AppState>,
    caller: AgentCaller,
    JsonOrForm(report): JsonOrForm<ContainerStatusReport>,
) -> ApiResult<StatusCode> {
    let stack = agent_stack(&state, &caller, &report.stack_id)?;
    check_instance_id(&report.instance_id)?;
    let status: ContainerStatus =
        report
            .status
            .parse()
            .map_err(|err: flotilla_common::status::UnknownStatus| {
                ApiError::bad_request("invalid_field", err.to_string())
                    .context(json!({ "path": "status" }))
            })?;
    if report
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 1024)
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            "reason is longer than 1024 characters",
        )
        .context(json!({ "path": "reason" })));
    }
    let holder = report_rules::holder(&state.store, &stack.stack_id, &report.instance_id)?;
    if !report_rules::status_taken(&caller.reporter(), holder.map(|h| h.1)) {
        return Err(ApiError::not_found("instance_id", &report.instance_id));
    }
    let recorded = crate::reports::Report {
        stack_id: stack.stack_id.clone(),
        instance_id: report.instance_id.clone(),
        status: status.to_string(),
        flag: report.flag,
        exit_code: report.exit_code,
        reason: report.reason,
        time_ms: clock::now_ms(),
        version_id: None,
        agent_id: None,
        commit: None,
        seq: 0,
        source: crate::reports::Source::Http,
    };
    crate::reports::record(&state.store, recorded).await?;
    state.nudge();
    tracing::info!(stack_id = %stack.stack_id, instance_id = %report.instance_id, status = %status, "container status");
    Ok(StatusCode::ACCEPTED)
}

/// The event history, oldest first, filtered; or, with `follow=true` or
/// `Accept: text/event-stream`, a live stream of them (SSE: `id` is the
/// event id, `event` its type, `data` the record; resumable with
/// `Last-Event-ID`; heartbeats every 15 s). Operators see their own
/// stacks' events; admins see all.
#[utoipa::path(get, path = "/v3/events", tag = "events",
    security(("bearer" = [])),
    params(EventsQuery, PageQuery),
    responses(
        (status = 200, description = "Events, oldest first (JSON, a page: `limit` and `offset` count from `since`), or a text/event-stream with `follow`", headers(
            ("X-Total-Count" = usize, description = "Events matching the filter after `since` (JSON lists only)"),
            ("Link" = String, description = "`rel=\"next\"` and `rel=\"prev\"` pages, when there are (JSON lists only)"),
        ), content(
            (Vec<EventRecord> = "application/json"),
            (super::event_stream::StreamEvent = "text/event-stream"),
        )),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot read events", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    operator: Operator,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
    pager: Pager,
) -> ApiResult<Response> {
    super::pages::check_since(query.since)?;
    let wants_stream = query.follow.unwrap_or(false)
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
    if wants_stream {
        let resume = match headers.get("last-event-id") {
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_header",
                            "Last-Event-ID must be an event id (a number)",
                        )
                    })?,
            ),
            None => None,
        };
        let filter = EventFilter {
            after_id: None,
            stack_id: query.stack_id,
            instance_id: query.instance_id,
            kind: query.kind,
            stacks: None,
            data: Vec::new(),
            limit: usize::MAX,
        };
        let after = resume.or(query.since).unwrap_or(0);
        return Ok(super::event_stream::follow(state, operator, filter, after).into_response());
    }
    let filter = EventFilter {
        after_id: query.since,
        stack_id: query.stack_id,
        instance_id: query.instance_id,
        kind: query.kind,
        stacks: operator.visible_stacks(&state.store)?,
        data: Vec::new(),
        limit: pager.page.limit,
    };
    let (events, total) = state.store.events_page(&filter, pager.page.offset)?;
    Ok(pager.with_total(events, total).into_response())
}
