//! The one error shape every failure takes, from the CloudMC reference:
//! `{"errors":[{"code","message","context"}]}`, with the HTTP status that
//! fits. Handlers, extractors and fallbacks all return [`ApiError`], so no
//! plain-text rejection ever reaches a client.

use crate::auth::AuthError;
use crate::store::StoreError;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub errors: Vec<ErrorDetail>,
}

/// One error: a stable machine-readable `code`, a message for people, and
/// `context` naming what it is about (a JSON path, an id, a limit).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[schema(value_type = Object)]
    pub context: Value,
}

/// An error response waiting to be sent.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub errors: Vec<ErrorDetail>,
    /// Headers the answer carries besides the body (`Retry-After`).
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// One error with an empty context.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            errors: vec![ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
                context: json!({}),
            }],
            headers: Vec::new(),
        }
    }

    /// Adds a header to the answer.
    pub fn header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// 429 `code` with `Retry-After: retry_after_secs` and the seconds in
    /// the context as well.
    pub fn too_many(code: &str, message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
            .context(json!({ "retry_after": retry_after_secs }))
            .header(header::RETRY_AFTER, HeaderValue::from(retry_after_secs))
    }

    /// Sets the context of the (first) error.
    pub fn context(mut self, context: Value) -> Self {
        if let Some(first) = self.errors.first_mut() {
            first.context = context;
        }
        self
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 for a missing (or not visible) resource of `kind` named `id`.
    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{kind} {id:?} not found"),
        )
        .context(json!({ kind: id }))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 500 without details: the cause goes to the log, not to the client.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the controller log has the details",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                errors: self.errors,
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"flotilla\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = %err, "store failure");
        ApiError::internal()
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Store(err) => err.into(),
            AuthError::BadCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_client", err.to_string())
            }
            other => ApiError::unauthorized(other.to_string()),
        }
    }
}

impl From<crate::quotas::Exceeded> for ApiError {
    /// 409 `quota_exceeded`, naming the quota and its limit: the caller
    /// must free one before making another.
    fn from(err: crate::quotas::Exceeded) -> Self {
        tracing::info!(quota = err.quota.key(), limit = err.limit, "quota reached");
        ApiError::new(StatusCode::CONFLICT, "quota_exceeded", err.to_string())
            .context(json!({ "quota": err.quota.key(), "limit": err.limit }))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request("invalid_path", rejection.body_text())
    }
}

/// What a handler returns.
pub type ApiResult<T> = Result<T, ApiError>;

/// One detail per problem, each with its pointer and `extra` in its
/// context.
fn problem_details(
    problems: Vec<crate::template::validate::Problem>,
    code: &str,
    extra: &Value,
) -> Vec<ErrorDetail> {
    problems
        .into_iter()
        .map(|problem| {
            let mut context = json!({ "path": problem.path });
            if let (Some(context), Some(extra)) = (context.as_object_mut(), extra.as_object()) {
                context.extend(extra.clone());
            }
            ErrorDetail {
                code: code.into(),
                message: problem.message,
                context,
            }
        })
        .collect()
}

impl From<crate::stacks::StackError> for ApiError {
    /// Each refusal of a stack operation as its status and code: a
    /// malformed body 400 (every problem listed), a well-formed one the
    /// operator's policy refuses 403, a missing thing 404, a state that
    /// does not allow it 409.
    fn from(err: crate::stacks::StackError) -> Self {
        use crate::stacks::StackError as E;
        let message = err.to_string();
        let with = |status, code: &str, details: Vec<ErrorDetail>| {
            let mut error = ApiError::new(status, code, message.clone());
            if !details.is_empty() {
                error.errors = details;
            }
            error
        };
        match err {
            E::Invalid(problems) => with(
                StatusCode::BAD_REQUEST,
                "invalid_template",
                problem_details(problems, "invalid_template", &json!({})),
            ),
            E::DuplicateFlag(problems) => with(
                StatusCode::CONFLICT,
                "duplicate_flag",
                problem_details(problems, "duplicate_flag", &json!({})),
            ),
            E::TooLarge { problems, limit } => with(
                StatusCode::FORBIDDEN,
                "container_section_too_large",
                problem_details(
                    problems,
                    "container_section_too_large",
                    &json!({ "limit": limit }),
                ),
            ),
            E::PolicyDenied(denials) => with(
                StatusCode::FORBIDDEN,
                "policy_denied",
                denials
                    .into_iter()
                    .map(|d| ErrorDetail {
                        code: "policy_denied".into(),
                        message: d.message,
                        context: json!({ "path": d.path, "pool": d.pool }),
                    })
                    .collect(),
            ),
            // A body naming a pool that does not exist conflicts with the
            // state (as an unknown flag does); the stack itself is there.
            E::UnknownPool { ref name, ref path } => {
                ApiError::new(StatusCode::CONFLICT, "unknown_pool", message.clone())
                    .context(json!({ "pool": name, "path": path }))
            }
            E::ForbiddenPool {
                ref name, ref path, ..
            } => {
                ApiError::forbidden(message.clone()).context(json!({ "pool": name, "path": path }))
            }
            E::NoPool { ref path, .. } => {
                ApiError::forbidden(message.clone()).context(json!({ "path": path }))
            }
            E::NotFound { kind, ref id } => ApiError::not_found(kind, id),
            E::UnknownFlag { ref flag, ref path } => {
                ApiError::new(StatusCode::CONFLICT, "unknown_flag", message.clone())
                    .context(json!({ "flag": flag, "path": path }))
            }
            E::Deleting { status, .. } => {
                ApiError::conflict(message).context(json!({ "stack_status": status }))
            }
            E::Conflict(message) => ApiError::conflict(message),
            E::Quota(err) => err.into(),
            E::Store(err) => err.into(),
            E::Damaged { .. } => ApiError::internal(),
        }
    }
}
