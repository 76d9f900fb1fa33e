//! `GET /v3/audits`: the audit trail, read from the `audit` events (see
//! [`crate::audit`]): who did what, when, to which thing. Admins see every
//! entry; users those of their own stacks.

use super::caller::Operator;
use super::error::{ApiResult, ErrorBody};
use super::extract::ApiQuery;
use super::pages::{PageQuery, Paged, Pager};
use super::state::AppState;
use crate::audit::{self, Action, Entry};
use crate::store::{EventFilter, EventRecord};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Which entries to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditsQuery {
    /// Only entries after this event id (event ids stay below 2^63).
    #[param(maximum = 9_223_372_036_854_775_807_i64)]
    pub since: Option<u64>,
    /// Only entries about this stack.
    pub stack_id: Option<String>,
    /// Only what this user (by user name) did.
    pub user: Option<String>,
    /// Only this action.
    pub action: Option<Action>,
}

/// One entry: an operator's action.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    /// The event id (a `since` cursor).
    pub id: u64,
    /// When, RFC 3339 with milliseconds.
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(flatten)]
    pub entry: Entry,
}

fn view(event: EventRecord) -> Option<AuditView> {
    let entry: Entry = serde_json::from_value(event.data).ok()?;
    Some(AuditView {
        id: event.id,
        time: event.time,
        stack_id: event.stack_id,
        instance_id: event.instance_id,
        entry,
    })
}

/// The audit trail, oldest first: every operator action (stack operations,
/// instance actions, drains, revocations, clients, join tokens, pools,
/// hooks) with who did it (`username`, `client_id`), when, and what
/// changed (config: the keys, never the values). Each entry is also an
/// event of type `audit`, so the event stream and webhooks carry it.
#[utoipa::path(get, path = "/v3/audits", tag = "events",
    security(("bearer" = [])),
    params(AuditsQuery, PageQuery),
    responses(
        (status = 200, description = "Entries, oldest first", body = Vec<AuditView>, headers(
            ("X-Total-Count" = usize, description = "Entries matching the filter after `since`"),
            ("Link" = String, description = "`rel=\"next\"` and `rel=\"prev\"` pages, when there are"),
        )),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "A stack token cannot read the audit trail", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    operator: Operator,
    ApiQuery(query): ApiQuery<AuditsQuery>,
    pager: Pager,
) -> ApiResult<Paged<AuditView>> {
    super::pages::check_since(query.since)?;
    let mut data = Vec::new();
    if let Some(user) = query.user {
        data.push(("username", user));
    }
    if let Some(action) = query.action {
        data.push(("action", action.as_str().to_owned()));
    }
    let filter = EventFilter {
        after_id: query.since,
        stack_id: query.stack_id,
        instance_id: None,
        kind: Some(audit::KIND.to_owned()),
        stacks: operator.visible_stacks(&state.store)?,
        data,
        limit: pager.page.limit,
    };
    let (events, total) = state.store.events_page(&filter, pager.page.offset)?;
    Ok(pager.with_total(events.into_iter().filter_map(view).collect(), total))
}
