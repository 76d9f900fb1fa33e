//! Webhook subscriptions (`/v3/hooks`): subscribe a URL to event types,
//! list and remove subscriptions, and read each one's deliveries.

use super::caller::Operator;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath};
use super::state::AppState;
use crate::clock;
use crate::store::{DeliveryRecord, HookRecord};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

/// A subscription request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHook {
    /// Where deliveries go (`http://` or `https://`).
    pub url: String,
    /// Event types (`spot.shutdown`, `stack.status`, `container.status`,
    /// ...); empty or absent for every type.
    #[serde(default)]
    pub events: Vec<String>,
    /// Only this stack's events.
    pub stack_id: Option<String>,
}

/// A subscription as listed (without its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct HookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_id: Option<String>,
    pub created: String,
    /// `active`, or `disabled` once the client that made it is revoked
    /// (nothing is delivered any more).
    pub status: HookStatus,
}

/// Whether a subscription still delivers.
#[derive(Debug, Clone, Copy, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HookStatus {
    Active,
    Disabled,
}

/// A new subscription: its `secret` signs every delivery and is shown
/// this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewHook {
    #[serde(flatten)]
    pub hook: HookView,
    pub secret: String,
}

fn view(state: &AppState, hook: &HookRecord) -> ApiResult<HookView> {
    let status = if state.store.hook_disabled(hook)? {
        HookStatus::Disabled
    } else {
        HookStatus::Active
    };
    Ok(HookView {
        id: hook.id.clone(),
        url: hook.url.clone(),
        events: hook.events.clone(),
        stack_id: hook.stack_id.clone(),
        created: clock::rfc3339_ms(hook.created_ms),
        status,
    })
}

fn invalid(path: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_field", message).context(json!({ "path": path }))
}

fn check(request: &CreateHook) -> ApiResult<()> {
    let url = request.url.trim();
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    let host_ok = url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or_default())
        .is_some_and(|host| !host.is_empty());
    if !scheme_ok || !host_ok || url.len() > 2048 || url.chars().any(char::is_whitespace) {
        return Err(invalid(
            "url",
            "url must be an http:// or https:// URL of at most 2048 characters",
        ));
    }
    if request.events.len() > 64 {
        return Err(invalid("events", "at most 64 event types"));
    }
    for (i, kind) in request.events.iter().enumerate() {
        let ok = (1..=64).contains(&kind.len())
            && kind.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            });
        if !ok {
            return Err(invalid(
                &format!("events/{i}"),
                "event types are lower-case words joined by dots, like spot.shutdown",
            ));
        }
    }
    Ok(())
}

fn owned_hook(state: &AppState, operator: &Operator, id: &str) -> ApiResult<HookRecord> {
    match state.store.hook(id)? {
        Some(hook) if operator.admin || hook.user_id == operator.user_id => Ok(hook),
        _ => Err(ApiError::not_found("hook", id)),
    }
}

/// Subscribes a URL to events. Operators get their own stacks' events;
/// an admin's subscription gets every event.
#[utoipa::path(post, path = "/v3/hooks", tag = "events",
    security(("bearer" = [])),
    request_body(content = CreateHook, content_type = "application/json"),
    responses(
        (status = 201, description = "Subscribed; the secret is shown this once", body = NewHook),
        (status = 400, description = "Invalid field or malformed body; webhook_target_refused for an internal target", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot subscribe", body = ErrorBody),
        (status = 404, description = "No such stack", body = ErrorBody),
        (status = 409, description = "Too many subscriptions", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    operator: Operator,
    ApiJson(request): ApiJson<CreateHook>,
) -> ApiResult<(StatusCode, Json<NewHook>)> {
    check(&request)?;
    crate::hook_targets::check_url(request.url.trim(), state.settings.webhook_allow_private)
        .await
        .map_err(|why| {
            ApiError::bad_request(
                "webhook_target_refused",
                format!("the hook URL is refused: {why}"),
            )
            .context(json!({ "path": "url" }))
        })?;
    if let Some(stack_id) = &request.stack_id {
        super::stacks::load_owned_stack(&state, &operator, stack_id)?;
    }
    let mine = state
        .store
        .hooks()?
        .iter()
        .filter(|h| h.user_id == operator.user_id)
        .count();
    state.admit(crate::quotas::Quota::HooksPerUser, mine)?;
    let hook = HookRecord {
        id: format!(
            "wh-{}",
            flotilla_common::ids::random_alphanumeric(12).to_lowercase()
        ),
        user_id: operator.user_id.clone(),
        admin: operator.admin,
        client_id: Some(operator.client_id.clone()),
        url: request.url.trim().to_owned(),
        events: request.events,
        stack_id: request.stack_id,
        secret: flotilla_common::ids::random_alphanumeric(40),
        created_ms: clock::now_ms(),
        after_event: state.store.latest_event_id()?,
    };
    state.store.insert_hook(&hook)?;
    state.store.flush().await?;
    tracing::info!(hook_id = %hook.id, events = ?hook.events, "webhook subscribed");
    Ok((
        StatusCode::CREATED,
        Json(NewHook {
            hook: view(&state, &hook)?,
            secret: hook.secret.clone(),
        }),
    ))
}

/// Lists subscriptions (an admin sees all; others their own).
#[utoipa::path(get, path = "/v3/hooks", tag = "events",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Subscriptions, without secrets", body = Vec<HookView>),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot list subscriptions", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    operator: Operator,
) -> ApiResult<Json<Vec<HookView>>> {
    let views = state
        .store
        .hooks()?
        .iter()
        .filter(|h| operator.admin || h.user_id == operator.user_id)
        .map(|hook| view(&state, hook))
        .collect::<ApiResult<_>>()?;
    Ok(Json(views))
}

/// Removes a subscription and its delivery history.
#[utoipa::path(delete, path = "/v3/hooks/{hook_id}", tag = "events",
    security(("bearer" = [])),
    params(("hook_id" = String, Path, description = "Subscription id (wh-...)")),
    responses(
        (status = 200, description = "Removed", body = HookView),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot remove subscriptions", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(hook_id): ApiPath<String>,
) -> ApiResult<Json<HookView>> {
    let hook = owned_hook(&state, &operator, &hook_id)?;
    state.store.remove_hook(&hook.id)?;
    state.store.flush().await?;
    tracing::info!(hook_id = %hook.id, "webhook removed");
    Ok(Json(view(&state, &hook)?))
}

/// A subscription's deliveries, oldest event first: state (`pending`,
/// `delivered`, `failed`), attempts, the receiver's last status or error.
#[utoipa::path(get, path = "/v3/hooks/{hook_id}/deliveries", tag = "events",
    security(("bearer" = [])),
    params(("hook_id" = String, Path, description = "Subscription id (wh-...)")),
    responses(
        (status = 200, description = "Deliveries", body = Vec<DeliveryRecord>),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot read deliveries", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
    ))]
pub async fn deliveries(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(hook_id): ApiPath<String>,
) -> ApiResult<Json<Vec<DeliveryRecord>>> {
    let hook = owned_hook(&state, &operator, &hook_id)?;
    Ok(Json(state.store.deliveries(&hook.id)?))
}
