//! Request extractors that fail with [`ApiError`] instead of axum's plain
//! text: bodies (JSON, or form-encoded where the Mobingi agent sends forms),
//! query strings and path segments.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How long a request's whole body may take to arrive, put on every
/// request by the router, so a client trickling its body is cut off.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// The address the request came from (the TCP peer).
pub struct Peer(pub IpAddr);

/// The TCP peer's address of a request, if the server recorded it.
pub fn peer(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        peer(&parts.extensions).map(Peer).ok_or_else(|| {
            tracing::error!("request without connection info");
            ApiError::internal()
        })
    }
}
use serde_json::{json, Value};

/// A query string, rejected with the error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Path segments, rejected with the error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// A JSON body. 415 without a JSON content type, 413 over the body limit,
/// 400 for malformed JSON or wrong types (with the path of the bad value).
pub struct ApiJson<T>(pub T);

/// A JSON or `application/x-www-form-urlencoded` body, for the endpoints the
/// original alm-agent calls with forms.
pub struct JsonOrForm<T>(pub T);

#[derive(PartialEq)]
enum BodyKind {
    Json,
    Form,
}

fn body_kind(headers: &HeaderMap) -> Option<BodyKind> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mime = value.split(';').next()?.trim().to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Some(BodyKind::Json)
    } else if mime == "application/x-www-form-urlencoded" {
        Some(BodyKind::Form)
    } else {
        None
    }
}

fn unsupported(expected: &str, headers: &HeaderMap) -> ApiError {
    let got = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("expected Content-Type {expected}, got {got}"),
    )
    .context(json!({ "content_type": got }))
}

/// Reads the whole body within the router's size limit and time limit.
async fn read<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit = req
        .extensions()
        .get::<BodyTimeout>()
        .map_or(crate::api::limits::DEFAULT_BODY_TIMEOUT, |t| t.0);
    let Ok(read) = tokio::time::timeout(limit, Bytes::from_request(req, state)).await else {
        return Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("request body not received within {} s", limit.as_secs_f64()),
        )
        .context(json!({ "timeout_secs": limit.as_secs_f64() }))
        // The rest of the body is never read: the connection cannot carry
        // another request.
        .header(header::CONNECTION, HeaderValue::from_static("close")));
    };
    read.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "payload_too_large",
                "request body is larger than the configured limit",
            )
        } else {
            ApiError::new(status, "bad_body", rejection.body_text())
        }
    })
}

/// Numbers written with a fraction of zero (`231.0`) become integers, as
/// JSON Schema counts them (`{"type": "integer"}` admits `231.0`), so a
/// field the document declares an integer takes them too.
fn whole_numbers(value: &mut Value) {
    match value {
        Value::Number(number) if number.is_f64() => {
            let Some(float) = number.as_f64() else {
                return;
            };
            if float.fract() != 0.0 {
                return;
            }
            // The casts are exact: the bounds are checked first, and a
            // float with no fraction converts without rounding.
            if (0.0..18_446_744_073_709_551_616.0).contains(&float) {
                *value = Value::from(float as u64);
            } else if (i64::MIN as f64..0.0).contains(&float) {
                *value = Value::from(float as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(members) => members.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

/// Parses JSON, naming the path of the value that did not fit.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "malformed_json",
            "request body is empty; expected JSON",
        ));
    }
    // Syntax first (the whole document, trailing bytes included), so a
    // malformed body is reported as such rather than as a missing field.
    let mut document: Value = serde_json::from_slice(bytes)
        .map_err(|err| ApiError::bad_request("malformed_json", format!("malformed JSON: {err}")))?;
    whole_numbers(&mut document);
    let value = serde_path_to_error::deserialize(document).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_data() {
            ApiError::bad_request("invalid_field", format!("{path}: {inner}"))
                .context(json!({ "path": path }))
        } else {
            ApiError::bad_request("malformed_json", format!("malformed JSON: {inner}"))
        }
    })?;
    Ok(value)
}

fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_urlencoded::from_bytes(bytes).map_err(|err| {
        // serde names the field for missing or mistyped values; anything
        // else is a body that is not a form at all.
        let message = err.to_string();
        let code = if message.contains("field") || message.contains("invalid") {
            "invalid_field"
        } else {
            "invalid_form"
        };
        ApiError::bad_request(code, format!("form body: {message}"))
    })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if body_kind(req.headers()) != Some(BodyKind::Json) {
            return Err(unsupported("application/json", req.headers()));
        }
        let bytes = read(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be left out entirely (then `T::default()`), for
/// actions whose parameters are all optional.
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared = req.headers().contains_key(axum::http::header::CONTENT_TYPE);
        if declared && body_kind(req.headers()) != Some(BodyKind::Json) {
            return Err(unsupported("application/json", req.headers()));
        }
        let bytes = read(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Some(kind) = body_kind(req.headers()) else {
            return Err(unsupported(
                "application/json or application/x-www-form-urlencoded",
                req.headers(),
            ));
        };
        let bytes = read(req, state).await?;
        match kind {
            BodyKind::Json => parse_json(&bytes).map(JsonOrForm),
            BodyKind::Form => parse_form(&bytes).map(JsonOrForm),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::whole_numbers;
    use serde_json::{json, Value};

    #[test]
    fn whole_floats_become_integers() {
        let cases = [
            (json!(231.0), json!(231)),
            (json!(-4.0), json!(-4)),
            (json!(0.0), json!(0)),
            (json!(-0.0), json!(0)),
            (json!(1.5), json!(1.5)),
            (json!(1e300), json!(1e300)),
            (json!(7), json!(7)),
            (
                json!({"a": [2.0, "x", {"b": 3.0}]}),
                json!({"a": [2, "x", {"b": 3}]}),
            ),
        ];
        for (mut value, want) in cases {
            whole_numbers(&mut value);
            assert_eq!(value, want);
            assert_eq!(value.is_f64(), want.is_f64(), "{want}");
        }
        let mut big = Value::from(18_446_744_073_709_551_616.0_f64);
        whole_numbers(&mut big);
        assert!(big.is_f64(), "past u64 stays a float");
    }
}
