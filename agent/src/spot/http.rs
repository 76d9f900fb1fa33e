//! The tiny HTTP exchange the metadata services (and the controller's REST
//! fallback) need, on hyper: one request per connection, a hard time-out,
//! bodies bounded.

use super::CheckError;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use std::time::Duration;

/// Largest metadata answer read.
const MAX_BODY: usize = 64 * 1024;

/// A metadata answer.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// The `ETag` header (GCP's metadata server versions every value).
    pub etag: Option<String>,
}

impl Answer {
    /// The body as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request to `base` (`http://host[:port]`) and reads the answer
/// within `timeout`.
pub async fn request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Answer, CheckError> {
    send(base, method, path, headers, Vec::new(), timeout).await
}

/// Like [`request`], with a body.
pub async fn send(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Answer, CheckError> {
    tokio::time::timeout(timeout, exchange(base, method, path, headers, body))
        .await
        .map_err(|_| CheckError::TimedOut)?
}

async fn exchange(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Answer, CheckError> {
    let unreachable = |err: String| CheckError::Unreachable(err);
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| unreachable(format!("{base} is not an http:// URL")))?
        .trim_end_matches('/');
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|err| unreachable(err.to_string()))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|err| unreachable(err.to_string()))?;
    let driver = tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|err| unreachable(err.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| unreachable(err.to_string()));
    let result = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let etag = response
                .headers()
                .get(hyper::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.len() <= 128 && v.chars().all(|c| c.is_ascii_alphanumeric()))
                .map(str::to_owned);
            match Limited::new(response.into_body(), MAX_BODY).collect().await {
                Ok(body) => Ok(Answer {
                    status,
                    body: body.to_bytes().to_vec(),
                    etag,
                }),
                Err(err) => Err(CheckError::Undecodable {
                    path: path.to_owned(),
                    reason: err.to_string(),
                }),
            }
        }
        Err(err) => Err(err),
    };
    driver.abort();
    result
}
