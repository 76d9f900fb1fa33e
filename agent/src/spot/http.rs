//! The tiny HTTP exchange the metadata services (and the controller's REST
//! fallback) need, on hyper: one request per connection, a hard time-out,
//! bodies bounded.

use super::CheckError;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use std::sync::Arc;
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

/// Like [`request`], with a body (plain HTTP only).
pub async fn send(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Answer, CheckError> {
    send_tls(base, method, path, headers, body, timeout, None).await
}

/// Like [`send`]; an `https://` base is reached over TLS with `tls`.
pub async fn send_tls(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    timeout: Duration,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Answer, CheckError> {
    let request = Outgoing {
        method,
        path,
        headers,
        body,
    };
    tokio::time::timeout(timeout, connect(base, request, tls))
        .await
        .map_err(|_| CheckError::TimedOut)?
}

/// One request, before it is sent.
struct Outgoing<'a> {
    method: &'a str,
    path: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: Vec<u8>,
}

/// `host:port` and the host of an authority (`[v6]:port` included).
fn split_authority(authority: &str, default_port: u16) -> (String, String) {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let has_port = match authority.strip_prefix('[') {
        Some(_) => authority.contains("]:"),
        None => authority.contains(':'),
    };
    let address = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    };
    (address, host.to_owned())
}

async fn connect(
    base: &str,
    request: Outgoing<'_>,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Answer, CheckError> {
    let unreachable = |err: String| CheckError::Unreachable(err);
    let (secure, rest) = if let Some(rest) = base.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = base.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(unreachable(format!(
            "{base} is not an http:// or https:// URL"
        )));
    };
    let authority = rest.trim_end_matches('/');
    let (address, host) = split_authority(authority, if secure { 443 } else { 80 });
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|err| unreachable(err.to_string()))?;
    if !secure {
        return exchange(stream, authority, request).await;
    }
    let config = tls.ok_or_else(|| unreachable(format!("{base}: no TLS settings for https")))?;
    let name = rustls::pki_types::ServerName::try_from(host)
        .map_err(|err| unreachable(format!("{base}: {err}")))?;
    let stream = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, stream)
        .await
        .map_err(|err| unreachable(format!("TLS with {authority}: {err}")))?;
    exchange(stream, authority, request).await
}

async fn exchange<S>(
    stream: S,
    authority: &str,
    outgoing: Outgoing<'_>,
) -> Result<Answer, CheckError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let unreachable = |err: String| CheckError::Unreachable(err);
    let Outgoing {
        method,
        path,
        headers,
        body,
    } = outgoing;
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

#[cfg(test)]
mod tests {
    use super::split_authority;

    #[test]
    fn authorities() {
        for (authority, port, address, host) in [
            ("127.0.0.1:8443", 443, "127.0.0.1:8443", "127.0.0.1"),
            ("api.example", 443, "api.example:443", "api.example"),
            ("api.example", 80, "api.example:80", "api.example"),
            ("[::1]:8443", 443, "[::1]:8443", "::1"),
            ("[::1]", 443, "[::1]:443", "::1"),
        ] {
            assert_eq!(
                split_authority(authority, port),
                (address.to_owned(), host.to_owned()),
                "{authority}"
            );
        }
    }
}
