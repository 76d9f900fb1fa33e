//! One attempt of one delivery over HTTP: the target checked again after
//! DNS, the body signed at sending time, everything bounded by the
//! attempt's timeout.

use super::decide::Answer;
use super::{signature, HookSettings};
use crate::store::{EventRecord, HookRecord};

/// The client every attempt shares: no redirects, the guarded resolver,
/// and the attempt's timeout for connecting and for the whole request.
pub fn client(settings: &HookSettings) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(crate::hook_targets::resolver(settings.allow_private))
        .build()
}

/// POSTs `event` to `hook` as delivery `delivery_id`; DNS, connecting
/// and the answer's head together take at most the settings' timeout.
pub async fn send(
    client: &reqwest::Client,
    settings: &HookSettings,
    hook: &HookRecord,
    event: &EventRecord,
    delivery_id: &str,
) -> Answer {
    let attempt = async {
        // Checked again at every attempt: a name can come to point
        // inward (the client's resolver refuses such addresses too).
        if crate::hook_targets::check_url(&hook.url, settings.allow_private)
            .await
            .is_err()
        {
            return Answer::Refused;
        }
        let body = serde_json::to_vec(event).unwrap_or_default();
        let now = u64::try_from(crate::clock::now_ms() / 1000).unwrap_or(0);
        let answer = client
            .post(&hook.url)
            .header("Content-Type", "application/json")
            .header(
                "User-Agent",
                concat!("flotilla/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-Flotilla-Event", &event.kind)
            .header("X-Flotilla-Delivery", delivery_id)
            .header(signature::HEADER, signature::sign(&hook.secret, now, &body))
            .body(body)
            .send()
            .await;
        match answer {
            Ok(response) => Answer::Status(response.status().as_u16()),
            Err(err) if err.is_timeout() => Answer::TimedOut,
            Err(err) if err.is_connect() => Answer::CannotConnect,
            Err(_) => Answer::Failed,
        }
    };
    tokio::time::timeout(settings.timeout, attempt)
        .await
        .unwrap_or(Answer::TimedOut)
}
