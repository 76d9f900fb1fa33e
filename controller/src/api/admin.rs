//! Client management for admins: what `flotilla-controller client ...` calls
//! while the server runs (sled allows one process per store).

use super::caller::Operator;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath};
use super::state::AppState;
use crate::auth::clients::{self, ClientInfo, NewClient};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

/// A username as `clients::check_username` takes it (the document's item
/// schema where usernames are listed).
#[derive(ToSchema)]
#[schema(pattern = r"^[A-Za-z0-9._@-]{1,64}$")]
#[allow(dead_code)]
pub struct Username(String);

/// A client to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    /// The user the client belongs to; created when new
    /// (`clients::check_username`).
    #[schema(pattern = r"^[A-Za-z0-9._@-]{1,64}$", min_length = 1, max_length = 64)]
    pub username: String,
    /// Whether the client sees and manages everything.
    #[serde(default)]
    pub admin: bool,
}

/// Creates an API client; the answer holds its secret, shown this once.
#[utoipa::path(post, path = "/v3/admin/clients", tag = "admin",
    security(("bearer" = [])),
    request_body(content = CreateClient, content_type = "application/json"),
    responses(
        (status = 201, description = "Client created", body = NewClient),
        (status = 400, description = "Invalid username or malformed body", body = ErrorBody),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    operator: Operator,
    ApiJson(request): ApiJson<CreateClient>,
) -> ApiResult<(StatusCode, Json<NewClient>)> {
    operator.require_admin("client management")?;
    clients::check_username(&request.username).map_err(|message| {
        ApiError::bad_request("invalid_field", message).context(json!({ "path": "username" }))
    })?;
    let client = clients::create(&state.store, &request.username, request.admin, None)?;
    let record = crate::audit::Record {
        action: crate::audit::Action::ClientCreate,
        target: &client.client_id,
        stack_id: None,
        instance_id: None,
        changes: json!({ "username": client.username, "admin": client.admin }),
    };
    state.audit(&operator, record)?;
    state.store.flush().await?;
    Ok((StatusCode::CREATED, Json(client)))
}

/// Lists API clients (never their secrets).
#[utoipa::path(get, path = "/v3/admin/clients", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Clients", body = Vec<ClientInfo>),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    operator: Operator,
) -> ApiResult<Json<Vec<ClientInfo>>> {
    operator.require_admin("client management")?;
    Ok(Json(clients::list(&state.store)?))
}

/// Revokes a client: its tokens stop working at once. An admin cannot
/// revoke the client it calls with (403), so the last admin never locks
/// everyone out; another admin client revokes it.
#[utoipa::path(delete, path = "/v3/admin/clients/{client_id}", tag = "admin",
    security(("bearer" = [])),
    params(("client_id" = String, Path, description = "Client id")),
    responses(
        (status = 200, description = "Client revoked", body = ClientInfo),
        (status = 401, description = "Missing, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Not an admin, or the caller's own client", body = ErrorBody),
        (status = 404, description = "No such client", body = ErrorBody),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(client_id): ApiPath<String>,
) -> ApiResult<Json<ClientInfo>> {
    operator.require_admin("client management")?;
    if client_id == operator.client_id {
        return Err(ApiError::forbidden(
            "a client cannot revoke itself; revoke it with another admin client",
        )
        .context(json!({ "client_id": client_id })));
    }
    let revoked = clients::revoke(&state.store, &client_id)?
        .ok_or_else(|| ApiError::not_found("client_id", &client_id))?;
    let record = crate::audit::Record {
        action: crate::audit::Action::ClientRevoke,
        target: &client_id,
        stack_id: None,
        instance_id: None,
        changes: json!({ "username": revoked.username }),
    };
    state.audit(&operator, record)?;
    state.store.flush().await?;
    Ok(Json(revoked))
}
