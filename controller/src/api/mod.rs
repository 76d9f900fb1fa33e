//! The REST API: the Mobingi ALM v3 routes plus Flotilla's extensions.
//!
//! Every route is registered through [`utoipa_axum`], so the OpenAPI
//! document served at `/v3/openapi.json` is generated from the handlers'
//! own annotations and cannot miss a route. Every failure, including unknown
//! paths (404), wrong methods (405), oversized bodies (413) and wrong content
//! types (415), answers with the one error shape in [`error`].

pub mod admin;
pub mod agents;
pub mod almagent;
pub mod audits;
pub mod caller;
pub mod error;
pub mod event_stream;
pub mod events;
pub mod extract;
pub mod follows;
pub mod hooks;
pub mod instances;
pub mod limits;
pub mod openapi;
pub mod operations;
pub mod pages;
pub mod pools;
pub mod rate_limit;
pub mod releases;
pub mod report_rules;
pub mod schemas;
pub mod stacks;
pub mod state;
pub mod tasks;
pub mod templates;
pub mod token;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::{Json, Router};
use error::ApiError;
use openapi::BearerAuth;
use serde::Serialize;
use serde_json::json;
use state::AppState;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flotilla controller API",
        description = "The Mobingi ALM v3 API and Flotilla's extensions. Every error answers {\"errors\":[{\"code\",\"message\",\"context\"}]}. Every answer carries X-RateLimit-Limit, X-RateLimit-Remaining and X-RateLimit-Reset (Unix seconds); past the limit, 429 rate_limited with Retry-After."
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// Health of the controller, for load balancers and `systemctl status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` when the store answers.
    pub status: String,
    pub version: String,
    /// Bytes the store takes on disk.
    pub store_bytes: u64,
}

/// Liveness and store health; needs no token.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 500, description = "The store does not answer", body = error::ErrorBody),
    ))]
async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    Ok(Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        store_bytes: state.store.size_on_disk()?,
    }))
}

/// Prometheus metrics (OpenMetrics text); needs no token (they hold no
/// secrets; keep the listen address private or filter it at the proxy).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Metrics in the OpenMetrics text format", content_type = "application/openmetrics-text", body = String),
        (status = 500, description = "The store does not answer", body = error::ErrorBody),
    ))]
async fn metrics(State(state): State<AppState>) -> Result<axum::response::Response, ApiError> {
    let m = &state.fleet.metrics;
    // Every state is exported, at zero when no agent is in it.
    let mut counts: std::collections::BTreeMap<&'static str, i64> = agents::AgentViewState::ALL
        .into_iter()
        .map(|s| (s.name(), 0))
        .collect();
    for agent in state.store.agents()? {
        *counts.entry(agents::view_state(&agent).name()).or_default() += 1;
    }
    for (name, count) in counts {
        m.agents
            .get_or_create(&crate::metrics::StateLabels { state: name.into() })
            .set(count);
    }
    m.agents_live
        .set(i64::try_from(state.fleet.registry.len()).unwrap_or(i64::MAX));
    m.fleet_unauthenticated
        .set(i64::try_from(state.fleet.unauthenticated.count()).unwrap_or(i64::MAX));
    m.store_bytes
        .set(i64::try_from(state.store.size_on_disk()?).unwrap_or(i64::MAX));
    let body = m.encode().map_err(|_| ApiError::internal())?;
    Ok(axum::response::IntoResponse::into_response((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )))
}

/// The method as a metric label: the methods HTTP defines, and `other`
/// for anything else, so made-up methods cannot create new series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Counts and times every request by route template and status.
async fn record_request(
    State(state): State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = method_label(request.method()).to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let m = &state.fleet.metrics;
    m.http_requests
        .get_or_create(&crate::metrics::RequestLabels {
            method,
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    m.http_duration
        .get_or_create(&crate::metrics::RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The routes and their generated OpenAPI document.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(token::issue, token::revoke))
        .routes(routes!(templates::apply, templates::versions))
        .routes(routes!(templates::compare))
        .routes(routes!(templates::describe, templates::update))
        .routes(routes!(templates::container))
        .routes(routes!(releases::rollback))
        .routes(routes!(releases::formation))
        .routes(routes!(releases::config_get, releases::config_set))
        .routes(routes!(tasks::get))
        .routes(routes!(stacks::list, stacks::list_post))
        .routes(routes!(
            stacks::describe,
            stacks::describe_post,
            stacks::delete
        ))
        .routes(routes!(stacks::containers))
        .routes(routes!(instances::act))
        .routes(routes!(instances::logs))
        .routes(routes!(events::spot_shutdown))
        .routes(routes!(events::container_status))
        .routes(routes!(events::list))
        .routes(routes!(audits::list))
        .routes(routes!(operations::restart))
        .routes(routes!(operations::stop))
        .routes(routes!(operations::start))
        .routes(routes!(hooks::create, hooks::list))
        .routes(routes!(hooks::remove))
        .routes(routes!(hooks::deliveries))
        .routes(routes!(admin::create, admin::list))
        .routes(routes!(admin::revoke))
        .routes(routes!(pools::create, pools::list))
        .routes(routes!(pools::get, pools::update, pools::delete))
        .routes(routes!(agents::create_join_token, agents::list_join_tokens))
        .routes(routes!(agents::revoke_join_token))
        .routes(routes!(agents::list_agents))
        .routes(routes!(agents::get_agent, agents::revoke_agent))
        .routes(routes!(agents::drain_agent, agents::undrain_agent))
        .routes(routes!(almagent::config))
        .routes(routes!(almagent::sts))
        .routes(routes!(almagent::agent_status))
        .routes(routes!(almagent::container_status))
}

/// The generated OpenAPI document (also served at `/v3/openapi.json`).
/// Modifiers that touch every operation run here, after the routes have
/// added theirs (`ApiDoc`'s own modifiers run before any route exists).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = documented_routes().split_for_parts().1;
    utoipa::Modify::modify(&openapi::MalformedParameters, &mut doc);
    utoipa::Modify::modify(&openapi::RateLimits, &mut doc);
    doc
}

/// This API's OpenAPI 3 document, generated from the handlers.
#[utoipa::path(get, path = "/v3/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3 document", body = Object)))]
async fn openapi_json() -> Json<&'static serde_json::Value> {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    Json(DOC.get_or_init(document))
}

/// The served document: [`openapi`] with the schemas the derive macros
/// cannot state ([`schemas::install`]).
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(openapi()).unwrap_or_default();
    schemas::install(&mut doc);
    doc
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {}", uri.path()),
    )
    .context(json!({ "path": uri.path() }))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
    .context(json!({ "method": method.as_str(), "path": uri.path() }))
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    tracing::error!("request handler panicked");
    axum::response::IntoResponse::into_response(ApiError::internal())
}

/// The complete REST API, ready to serve.
pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.body_limit;
    let body_timeout = extract::BodyTimeout(state.settings.body_timeout);
    let (routes, _) = documented_routes().split_for_parts();
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::Extension(body_timeout))
        .layer(CatchPanicLayer::custom(panic_response))
        // Outside the panic catcher, so every answer carries the headers.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate_limit::enforce,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let route = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("unmatched", MatchedPath::as_str);
                    tracing::info_span!("request", method = %request.method(), route = %route)
                })
                .on_response(
                    |response: &axum::response::Response,
                     latency: Duration,
                     _span: &tracing::Span| {
                        tracing::info!(
                            status = response.status().as_u16(),
                            latency_ms = latency.as_secs_f64() * 1000.0,
                            "response"
                        );
                    },
                ),
        )
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::method_label;
    use axum::http::Method;

    #[test]
    fn made_up_methods_share_one_label() {
        for (method, label) in [
            (Method::GET, "GET"),
            (Method::DELETE, "DELETE"),
            (Method::from_bytes(b"M00000001").expect("method"), "other"),
            (Method::from_bytes(b"PROPFIND").expect("method"), "other"),
        ] {
            assert_eq!(method_label(&method), label, "{method}");
        }
    }
}
