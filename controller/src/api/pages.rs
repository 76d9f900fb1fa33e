//! Pages of a list (Tutum's `meta`, carried in headers so the Mobingi array
//! shape stays): `limit` and `offset` pick the slice, `X-Total-Count` says
//! how many items the whole list has, and `Link` names the next and
//! previous pages with every other query parameter kept. Every list answer
//! is bounded by [`MAX_LIMIT`] items, whatever the caller asks.

use super::error::{ApiError, ApiResult};
use super::extract::ApiQuery;
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Items a page holds when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 1000;
/// Most items one page holds.
pub const MAX_LIMIT: usize = 10_000;
/// The header with the number of items in the whole list.
pub const TOTAL_COUNT: &str = "x-total-count";

/// The paging parameters of a list request.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page (default 1000); outside 1..=10000 it is refused
    /// (400), not silently clamped.
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
    /// Items skipped from the start of the list (default 0).
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub offset: Option<usize>,
}

/// Which slice of a list to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl PageQuery {
    /// The page asked for: the default limit when absent, 400 outside
    /// `1..=MAX_LIMIT`.
    pub fn page(self) -> ApiResult<Page> {
        let limit = match self.limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("limit must be 1..={MAX_LIMIT}"),
                )
                .context(json!({ "path": "limit", "limit": MAX_LIMIT })))
            }
        };
        let offset = self.offset.unwrap_or(0);
        if i64::try_from(offset).is_err() {
            return Err(ApiError::bad_request(
                "invalid_query",
                "offset must be at most 9223372036854775807",
            )
            .context(json!({ "path": "offset" })));
        }
        Ok(Page { offset, limit })
    }
}

/// A `since` cursor (the event lists') must be an event id: they stay
/// below 2^63.
pub fn check_since(since: Option<u64>) -> ApiResult<()> {
    if since.is_some_and(|since| i64::try_from(since).is_err()) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "since must be an event id, at most 9223372036854775807",
        )
        .context(json!({ "path": "since" })));
    }
    Ok(())
}

/// A list request's page and the URI it came by (for the `Link` header):
/// one extractor, so a handler cannot take the one without the other.
pub struct Pager {
    pub page: Page,
    uri: Uri,
}

impl<S: Send + Sync> FromRequestParts<S> for Pager {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ApiQuery(query) = ApiQuery::<PageQuery>::from_request_parts(parts, state).await?;
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map_or_else(|| parts.uri.clone(), |original| original.0.clone());
        Ok(Pager {
            page: query.page()?,
            uri,
        })
    }
}

impl Pager {
    /// This page of a whole list.
    pub fn of<T>(&self, items: Vec<T>) -> Paged<T> {
        let total = items.len();
        let items = items
            .into_iter()
            .skip(self.page.offset)
            .take(self.page.limit)
            .collect();
        self.with_total(items, total)
    }

    /// A page already cut (by the store) out of a list of `total` items.
    pub fn with_total<T>(&self, items: Vec<T>, total: usize) -> Paged<T> {
        Paged {
            items,
            total,
            link: links(
                self.uri.path(),
                self.uri.query().unwrap_or(""),
                self.page,
                total,
            ),
        }
    }
}

/// A page: the items as a JSON array, with `X-Total-Count` and `Link`.
pub struct Paged<T> {
    items: Vec<T>,
    total: usize,
    link: Option<String>,
}

impl<T> Paged<T> {
    /// The same page with each item turned into its view.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Paged<U> {
        Paged {
            items: self.items.into_iter().map(f).collect(),
            total: self.total,
            link: self.link,
        }
    }

    /// The same page with each item turned into its view: lists page their
    /// records first, so only the items shown are rendered.
    pub fn try_map<U, E>(self, f: impl FnMut(T) -> Result<U, E>) -> Result<Paged<U>, E> {
        Ok(Paged {
            items: self.items.into_iter().map(f).collect::<Result<_, E>>()?,
            total: self.total,
            link: self.link,
        })
    }
}

impl<T: Serialize> IntoResponse for Paged<T> {
    fn into_response(self) -> Response {
        let mut response = Json(self.items).into_response();
        let headers = response.headers_mut();
        headers.insert(TOTAL_COUNT, HeaderValue::from(self.total));
        if let Some(value) = self.link.and_then(|link| HeaderValue::from_str(&link).ok()) {
            headers.insert(axum::http::header::LINK, value);
        }
        response
    }
}

/// The `Link` header value of `page` of a `total`-item list requested at
/// `path?query`: `rel="next"` while items remain past this page,
/// `rel="prev"` when it does not start at the first item. Every query
/// parameter other than `limit` and `offset` is kept as it was sent.
pub fn links(path: &str, query: &str, page: Page, total: usize) -> Option<String> {
    let kept: Vec<(String, String)> = serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| key != "limit" && key != "offset")
        .collect();
    let target = |offset: usize| {
        let mut pairs = kept.clone();
        pairs.push(("limit".into(), page.limit.to_string()));
        pairs.push(("offset".into(), offset.to_string()));
        let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        format!("<{path}?{query}>")
    };
    let end = page.offset.saturating_add(page.limit);
    let mut links = Vec::new();
    if end < total {
        links.push(format!("{}; rel=\"next\"", target(end)));
    }
    if page.offset > 0 {
        let prev = page.offset.min(total).saturating_sub(page.limit);
        links.push(format!("{}; rel=\"prev\"", target(prev)));
    }
    (!links.is_empty()).then(|| links.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(offset: usize, limit: usize) -> Page {
        Page { offset, limit }
    }

    #[test]
    fn limits_table() {
        for (limit, want) in [
            (None, Some(DEFAULT_LIMIT)),
            (Some(1), Some(1)),
            (Some(MAX_LIMIT), Some(MAX_LIMIT)),
            (Some(0), None),
            (Some(MAX_LIMIT + 1), None),
        ] {
            let query = PageQuery {
                limit,
                offset: Some(3),
            };
            assert_eq!(query.page().ok().map(|p| p.limit), want, "{limit:?}");
        }
        assert_eq!(
            PageQuery::default().page().ok(),
            Some(page(0, DEFAULT_LIMIT))
        );
    }

    #[test]
    fn links_table() {
        let next = |q: &str| format!("</v3/events?{q}>; rel=\"next\"");
        let prev = |q: &str| format!("</v3/events?{q}>; rel=\"prev\"");
        for (query, page, total, want) in [
            // One page holds everything: no link.
            ("", page(0, 10), 10, None),
            ("", page(0, 10), 0, None),
            // First of several pages.
            ("", page(0, 10), 25, Some(next("limit=10&offset=10"))),
            // Middle: both, other parameters kept, old paging replaced.
            (
                "type=spot.shutdown&limit=10&offset=10",
                page(10, 10),
                25,
                Some(format!(
                    "{}, {}",
                    next("type=spot.shutdown&limit=10&offset=20"),
                    prev("type=spot.shutdown&limit=10&offset=0")
                )),
            ),
            // Last page: only prev.
            ("", page(20, 10), 25, Some(prev("limit=10&offset=10"))),
            // An offset that does not fall on a page boundary.
            (
                "",
                page(5, 10),
                25,
                Some(format!(
                    "{}, {}",
                    next("limit=10&offset=15"),
                    prev("limit=10&offset=0")
                )),
            ),
            // Past the end: prev leads back to the last full page.
            ("", page(100, 10), 25, Some(prev("limit=10&offset=15"))),
            // Values are encoded again as they came.
            (
                "stack_id=a%20b&since=7",
                page(0, 1),
                2,
                Some(next("stack_id=a+b&since=7&limit=1&offset=1")),
            ),
        ] {
            assert_eq!(
                links("/v3/events", query, page, total),
                want,
                "{query:?} {page:?} {total}"
            );
        }
    }

    #[test]
    fn a_page_is_a_slice_with_the_whole_count() {
        let pager = Pager {
            page: page(2, 2),
            uri: Uri::from_static("/v3/hooks?offset=2&limit=2"),
        };
        let paged = pager.of(vec![1, 2, 3, 4, 5]);
        assert_eq!(paged.items, vec![3, 4]);
        assert_eq!(paged.total, 5);
        let response = paged.into_response();
        assert_eq!(response.headers()[TOTAL_COUNT], "5");
        assert_eq!(
            response.headers()[axum::http::header::LINK],
            "</v3/hooks?limit=2&offset=4>; rel=\"next\", </v3/hooks?limit=2&offset=0>; rel=\"prev\""
        );
    }
}
