//! Modifiers of the generated OpenAPI document: what every operation shares
//! (the bearer scheme, the rate limit's 429 and headers) is declared once
//! here instead of on each handler, so no operation can forget it.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Type};

/// The rate limit's response headers, on every answer: name and meaning.
pub const RATE_LIMIT_HEADERS: [(&str, &str); 3] = [
    (
        "X-RateLimit-Limit",
        "Requests allowed in the current window",
    ),
    (
        "X-RateLimit-Remaining",
        "Requests left in the current window",
    ),
    (
        "X-RateLimit-Reset",
        "When the window resets (Unix time, seconds)",
    ),
];

/// Declares the `bearer` security scheme the operations name.
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Declares the 400 of every operation that takes path or query
/// parameters: `ApiPath` and `ApiQuery` refuse a malformed value (a bool
/// that is not `true`/`false`, a number out of range, a repeated key, a
/// segment that is not UTF-8) before the handler runs.
pub struct MalformedParameters;

impl utoipa::Modify for MalformedParameters {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in operations_mut(item) {
                let has_parameters = operation
                    .parameters
                    .as_ref()
                    .is_some_and(|parameters| !parameters.is_empty());
                if has_parameters {
                    operation
                        .responses
                        .responses
                        .entry("400".to_owned())
                        .or_insert_with(|| {
                            error_response("A malformed path or query parameter (`invalid_query`, `invalid_path`)")
                        });
                }
            }
        }
    }
}

/// A response in the error shape.
fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(error_response_builder(description).build())
}

fn error_response_builder(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    )
}

/// Declares the rate limit on every operation: a 429 in the error shape
/// with `Retry-After`, and the `X-RateLimit-*` headers on every response.
/// The headers are optional in the document: answers made before the
/// limiter runs (or by a proxy in front) may lack them.
pub struct RateLimits;

impl utoipa::Modify for RateLimits {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in operations_mut(item) {
                declare_rate_limit(operation);
            }
        }
    }
}

/// Every operation of a path item, whatever its method.
fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn integer_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(utoipa::openapi::ObjectBuilder::new().schema_type(Type::Integer))
        .description(Some(description))
        .build()
}

fn declare_rate_limit(operation: &mut Operation) {
    let responses = &mut operation.responses.responses;
    let limited = responses.entry("429".to_owned()).or_insert_with(|| {
        error_response("Too many requests (`rate_limited`); retry after `Retry-After` seconds")
    });
    // Also on an operation that declares its own 429 (the token
    // endpoint's lockout): every 429 says when to come back.
    if let RefOr::T(limited) = limited {
        limited
            .headers
            .entry("Retry-After".to_owned())
            .or_insert_with(|| integer_header("Seconds to wait before the next request"));
    }
    for response in responses.values_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        for (name, description) in RATE_LIMIT_HEADERS {
            response
                .headers
                .entry(name.to_owned())
                .or_insert_with(|| integer_header(description));
        }
    }
}
