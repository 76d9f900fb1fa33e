//! The REST calls. Any failure becomes one line: the API's own error
//! (`{"errors":[{code,message}]}`) with its status, or why the controller
//! could not be reached.

use crate::session::Session;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the controller at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the controller answered {status} with a body that is not the API's: {body}")]
    Unexpected { status: u16, body: String },
}

impl CallError {
    /// The HTTP status, when the controller answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Api { status, .. } | CallError::Unexpected { status, .. } => Some(*status),
            CallError::Unreachable { .. } => None,
        }
    }
}

/// A client of one controller.
pub struct Client {
    pub http: reqwest::Client,
    pub session: Session,
    /// Items per page when listing (`limit`); `None`: the controller's
    /// default.
    pub page_size: Option<usize>,
}

/// Turns a non-2xx answer into the API's error.
fn api_error(status: u16, body: &str) -> CallError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    match parsed.as_ref().and_then(|v| v["errors"].get(0)) {
        Some(first) => CallError::Api {
            status,
            code: first["code"].as_str().unwrap_or("error").to_owned(),
            message: first["message"].as_str().unwrap_or_default().to_owned(),
        },
        None => CallError::Unexpected {
            status,
            body: body.chars().take(200).collect(),
        },
    }
}

/// The path of the `rel="next"` page a `Link` header names; only a path on
/// the same controller (the CLI sends its token nowhere else).
fn next_page(link: &str) -> Option<String> {
    let links = parse_link_header::parse_with_rel(link).ok()?;
    let uri = &links.get("next")?.raw_uri;
    uri.starts_with('/').then(|| uri.clone())
}

impl Client {
    /// A client for `session` (requests time out after 30 s; streams have
    /// no overall time-out).
    pub fn new(session: Session) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Client {
            http,
            session,
            page_size: None,
        }
    }

    fn unreachable(&self, err: &reqwest::Error) -> CallError {
        CallError::Unreachable {
            url: self.session.url.clone(),
            reason: if err.is_timeout() {
                "timed out".into()
            } else if err.is_connect() {
                "connection refused or no route".into()
            } else {
                err.to_string()
            },
        }
    }

    /// A request with the bearer token.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.session.url))
            .bearer_auth(&self.session.token)
    }

    /// Sends and reads a JSON answer (`null` for an empty body).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        Ok(self.call_with_headers(method, path, body).await?.0)
    }

    /// [`Client::call`], with the answer's headers (a list's `Link`).
    async fn call_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(Value, HeaderMap), CallError> {
        let mut request = self.request(method, path).timeout(Duration::from_secs(30));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|err| self.unreachable(&err))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .map_err(|err| self.unreachable(&err))?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &text));
        }
        if text.trim().is_empty() {
            return Ok((Value::Null, headers));
        }
        let value = serde_json::from_str(&text).map_err(|_| CallError::Unexpected {
            status,
            body: text.chars().take(200).collect(),
        })?;
        Ok((value, headers))
    }

    /// `GET path` of a list, every page of it: follows `Link: rel="next"`
    /// until there is none and answers one array, so `--json` output is
    /// the whole list however the controller pages it.
    pub async fn get_all(&self, path: &str) -> Result<Value, CallError> {
        let mut items = Vec::new();
        let first = match self.page_size {
            Some(limit) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                format!("{path}{sep}limit={limit}")
            }
            None => path.to_owned(),
        };
        let mut next = Some(first);
        let mut seen = std::collections::HashSet::new();
        while let Some(path) = next.take() {
            if !seen.insert(path.clone()) {
                break;
            }
            let (page, headers) = self.call_with_headers(Method::GET, &path, None).await?;
            let Value::Array(page) = page else {
                return Ok(page);
            };
            items.extend(page);
            next = headers
                .get(reqwest::header::LINK)
                .and_then(|value| value.to_str().ok())
                .and_then(next_page);
        }
        Ok(Value::Array(items))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value, CallError> {
        self.call(Method::GET, path, None).await
    }

    /// Opens a streaming response (logs, events); non-2xx answers are
    /// read whole and turned into the API's error.
    pub async fn open_stream(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CallError> {
        let response = request.send().await.map_err(|err| self.unreachable(&err))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        Err(api_error(status, &text))
    }
}

/// Logs in with client credentials; returns the token and its lifetime.
pub async fn login(url: &str, client_id: &str, secret: &str) -> Result<(String, u64), CallError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    let body = serde_json::json!({
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": secret,
    });
    let response = http
        .post(format!("{url}/v3/access_token"))
        .json(&body)
        .send()
        .await
        .map_err(|err| CallError::Unreachable {
            url: url.to_owned(),
            reason: err.to_string(),
        })?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    if status != 200 {
        return Err(api_error(status, &text));
    }
    let value: Value = serde_json::from_str(&text).map_err(|_| CallError::Unexpected {
        status,
        body: text.chars().take(200).collect(),
    })?;
    let token = value["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let expires = value["expires_in"].as_u64().unwrap_or(3600);
    if token.is_empty() {
        return Err(CallError::Unexpected {
            status,
            body: "no access_token in the answer".into(),
        });
    }
    Ok((token, expires))
}

#[cfg(test)]
mod tests {
    use super::next_page;

    #[test]
    fn next_page_table() {
        for (link, want) in [
            (
                "</v3/events?limit=2&offset=2>; rel=\"next\", </v3/events?limit=2&offset=0>; rel=\"prev\"",
                Some("/v3/events?limit=2&offset=2"),
            ),
            ("</v3/events?limit=2&offset=0>; rel=\"prev\"", None),
            ("<https://elsewhere.example/steal>; rel=\"next\"", None),
            ("not a link", None),
            ("", None),
        ] {
            assert_eq!(next_page(link).as_deref(), want, "{link:?}");
        }
    }
}
