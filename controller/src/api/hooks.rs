//! Webhook subscriptions (`/v3/hooks`): subscribe a URL to event types,
//! list and remove subscriptions, and read each one's deliveries.

use super::caller::Operator;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath};
use super::pages::{PageQuery, Paged, Pager};
use super::state::AppState;
use crate::clock;
use crate::store::{DeliveryRecord, HookRecord};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

/// Longest hook URL.
const MAX_URL: usize = 2048;
/// Most event types one subscription names.
const MAX_EVENTS: usize = 64;

/// A subscription request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHook {
    /// Where deliveries go: `http://` or `https://`, a host, then
    /// printable ASCII only (the pattern is what [`url_ok`] checks; whether
    /// the target may be delivered to is the 403 `webhook_target_refused`).
    #[schema(
        pattern = r##"^https?://[!"$-.0->@-~]+([/?#][!-~]*)?$"##,
        max_length = 2048
    )]
    pub url: String,
    /// Event types (`spot.shutdown`, `stack.status`, `container.status`,
    /// ...); empty or absent for every type.
    #[serde(default)]
    #[schema(max_items = 64, inline, value_type = Vec<EventType>)]
    pub events: Vec<String>,
    /// Only this stack's events.
    pub stack_id: Option<String>,
}

/// An event type a subscription names: the document's item schema for
/// `events` (the handler reads plain strings and checks [`event_ok`]).
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(pattern = r"^[a-z0-9._-]{1,64}$")]
pub struct EventType(String);

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

/// Whether `url` has the shape the document's pattern describes.
fn url_ok(url: &str) -> bool {
    let printable = |c: char| c.is_ascii_graphic();
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    url.len() <= MAX_URL && !authority.is_empty() && rest.chars().all(printable)
}

/// Whether `kind` is an event type as the document's pattern describes.
fn event_ok(kind: &str) -> bool {
    (1..=64).contains(&kind.len())
        && kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

fn check(request: &CreateHook) -> ApiResult<()> {
    if !url_ok(&request.url) {
        return Err(invalid(
            "url",
            "url must be an http:// or https:// URL of printable ASCII, at most 2048 characters",
        ));
    }
    if request.events.len() > MAX_EVENTS {
        return Err(invalid("events", "at most 64 event types"));
    }
    for (i, kind) in request.events.iter().enumerate() {
        if !event_ok(kind) {
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
        (status = 400, description = "Invalid field or malformed body", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot subscribe; `webhook_target_refused` for a target that does not resolve or is internal", body = ErrorBody),
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
    // A well-formed URL whose target policy forbids (or that does not
    // resolve) is refused, not malformed: 403.
    crate::hook_targets::check_url(&request.url, state.settings.webhook_allow_private)
        .await
        .map_err(|why| {
            ApiError::new(
                StatusCode::FORBIDDEN,
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
    let mut hook = HookRecord {
        id: format!(
            "wh-{}",
            flotilla_common::ids::random_alphanumeric(12).to_lowercase()
        ),
        user_id: operator.user_id.clone(),
        admin: operator.admin,
        client_id: Some(operator.client_id.clone()),
        url: request.url.clone(),
        events: request.events,
        stack_id: request.stack_id,
        secret: flotilla_common::ids::random_alphanumeric(40),
        created_ms: clock::now_ms(),
        after_event: 0,
    };
    // The hook starts after the entry of its own creation.
    hook.after_event = audit_hook(&state, &operator, crate::audit::Action::HookCreate, &hook)?;
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

/// Records a subscription's change: its URL without credentials, its
/// event types and stack, never its secret. Answers the entry's event id.
fn audit_hook(
    state: &AppState,
    operator: &Operator,
    action: crate::audit::Action,
    hook: &HookRecord,
) -> ApiResult<u64> {
    let record = crate::audit::Record {
        action,
        target: &hook.id,
        stack_id: hook.stack_id.as_deref(),
        instance_id: None,
        changes: json!({
            "url": flotilla_common::redact::strip_url_credentials(&hook.url),
            "events": hook.events,
        }),
    };
    state.audit(operator, record)
}

/// Lists subscriptions (an admin sees all; others their own).
#[utoipa::path(get, path = "/v3/hooks", tag = "events",
    security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "Subscriptions, without secrets", body = Vec<HookView>, headers(
            ("X-Total-Count" = usize, description = "Items in the whole list"),
            ("Link" = String, description = "`rel=\"next\"` and `rel=\"prev\"` pages, when there are"),
        )),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot list subscriptions", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    operator: Operator,
    pager: Pager,
) -> ApiResult<Paged<HookView>> {
    let hooks = state
        .store
        .hooks()?
        .into_iter()
        .filter(|h| operator.admin || h.user_id == operator.user_id)
        .collect();
    pager.of(hooks).try_map(|hook| view(&state, &hook))
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
    audit_hook(&state, &operator, crate::audit::Action::HookRemove, &hook)?;
    state.store.flush().await?;
    tracing::info!(hook_id = %hook.id, "webhook removed");
    Ok(Json(view(&state, &hook)?))
}

/// A subscription's deliveries, oldest event first: state (`pending`,
/// `delivered`, `failed`), attempts, the receiver's last status or error.
#[utoipa::path(get, path = "/v3/hooks/{hook_id}/deliveries", tag = "events",
    security(("bearer" = [])),
    params(("hook_id" = String, Path, description = "Subscription id (wh-...)"), PageQuery),
    responses(
        (status = 200, description = "Deliveries", body = Vec<DeliveryRecord>, headers(
            ("X-Total-Count" = usize, description = "Items in the whole list"),
            ("Link" = String, description = "`rel=\"next\"` and `rel=\"prev\"` pages, when there are"),
        )),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot read deliveries", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
    ))]
pub async fn deliveries(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(hook_id): ApiPath<String>,
    pager: Pager,
) -> ApiResult<Paged<DeliveryRecord>> {
    let hook = owned_hook(&state, &operator, &hook_id)?;
    Ok(pager.of(state.store.deliveries(&hook.id)?))
}

#[cfg(test)]
mod tests {
    use super::{event_ok, url_ok};

    #[test]
    fn hook_urls_table() {
        let cases = [
            ("http://example.com/hook", true),
            ("https://example.com:8443/a?b=c#d", true),
            ("https://example.com", true),
            ("https://example.com?x", true),
            ("ftp://example.com/", false),
            ("http://", false),
            ("http:///path", false),
            (" http://example.com/", false),
            ("http://example.com/ ", false),
            ("http://exa mple.com/", false),
            ("http://ex\u{e4}mple.com/", false),
            ("http://example.com/\n", false),
        ];
        for (url, ok) in cases {
            assert_eq!(url_ok(url), ok, "{url:?}");
        }
        assert!(!url_ok(&format!("http://a/{}", "x".repeat(2048))));
    }

    #[test]
    fn event_types_table() {
        for (kind, ok) in [
            ("spot.shutdown", true),
            ("container.status", true),
            ("a-b_c.9", true),
            ("", false),
            ("Spot", false),
            ("spot shutdown", false),
        ] {
            assert_eq!(event_ok(kind), ok, "{kind:?}");
        }
        assert!(!event_ok(&"a".repeat(65)));
    }
}
