//! Enrollment: a VM proves it holds a join token and gets a client
//! certificate for the key it generated itself (only the CSR travels; the
//! private key never leaves the VM).

use super::pending::Pending;
use super::shed::Shed;
use super::Fleet;
use crate::auth::secret;
use crate::clock;
use crate::store::{AgentRecord, AgentState, JoinOutcome};
use flotilla_common::wire::messages::{EnrollRequest, EnrollResponse};
use flotilla_common::wire::{codes, frame, handshake, PROTOCOL_VERSION};
use std::time::Duration;

/// Largest enrollment request accepted (a CSR and a few names).
pub const MAX_ENROLL_FRAME: usize = 64 * 1024;
/// How long an enrolled agent has to read its certificate and close.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// At least this long to read a refusal, even past the deadline.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// The code a refusal starts with when the instance id belongs to a live
/// agent (the agent's `enroll` prints it and exits non-zero).
pub const INSTANCE_IN_USE: &str = "instance_in_use";

/// Valid instance ids: cloud ids, hostnames.
pub fn valid_instance_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// Serves one enrollment connection; `pending` holds its unauthenticated
/// slot until the request is checked and sheds it at the deadline.
pub async fn handle(fleet: &Fleet, connection: quinn::Connection, pending: Pending) {
    let remote = connection.remote_address();
    let deadline = pending.deadline();
    let (mut send, request) =
        match tokio::time::timeout_at(deadline, read_request(&connection)).await {
            Ok(Some(read)) => read,
            Ok(None) => return,
            Err(_) => {
                fleet.shed(Shed::PreambleTimeout, remote);
                connection.close(codes::TIMED_OUT, b"handshake timed out");
                return;
            }
        };
    let response = enroll(fleet, request).await;
    let refused = matches!(response, EnrollResponse::Refused { .. });
    // A refused peer keeps its slot until it goes, or its deadline (with
    // time to read the answer) passes.
    let wait_until = if refused {
        deadline.max(tokio::time::Instant::now() + REFUSAL_GRACE)
    } else {
        pending.authenticated();
        tokio::time::Instant::now() + STEP_TIMEOUT
    };
    if frame::write(&mut send, &response, MAX_ENROLL_FRAME)
        .await
        .is_ok()
    {
        let _ = send.finish();
        // Let the agent read the answer and close first, so nothing in
        // flight is dropped by our close.
        let _ = tokio::time::timeout_at(wait_until, connection.closed()).await;
    }
    if refused {
        connection.close(codes::ENROLL_REFUSED, b"enrollment refused");
    } else {
        connection.close(codes::CLOSED, b"enrolled");
    }
}

/// The stream, both preambles and the request; `None` once the
/// connection is closed with the reason.
async fn read_request(
    connection: &quinn::Connection,
) -> Option<(quinn::SendStream, EnrollRequest)> {
    let Ok((mut send, mut recv)) = connection.accept_bi().await else {
        tracing::warn!("enrollment connection opened no stream");
        return None;
    };
    if let Err(err) = handshake::receive(&mut recv, PROTOCOL_VERSION).await {
        tracing::warn!(error = %err, "enrollment handshake refused");
        let _ = handshake::send(&mut send, PROTOCOL_VERSION).await;
        let code = match err {
            handshake::HandshakeError::UnsupportedVersion { .. } => codes::UNSUPPORTED_VERSION,
            _ => codes::PROTOCOL_ERROR,
        };
        connection.close(code, err.to_string().as_bytes());
        return None;
    }
    handshake::send(&mut send, PROTOCOL_VERSION).await.ok()?;
    match frame::read::<_, EnrollRequest>(&mut recv, MAX_ENROLL_FRAME).await {
        Ok(Some(request)) => Some((send, request)),
        Err(frame::FrameError::TooLarge { len, max }) => {
            tracing::warn!(len, max, "enrollment frame too large");
            connection.close(codes::FRAME_TOO_LARGE, b"enrollment request too large");
            None
        }
        other => {
            let error = match other {
                Err(err) => err.to_string(),
                _ => "stream ended".into(),
            };
            tracing::warn!(error = %error, "unreadable enrollment request");
            connection.close(codes::PROTOCOL_ERROR, b"unreadable enrollment request");
            None
        }
    }
}

fn refuse(reason: impl Into<String>) -> EnrollResponse {
    EnrollResponse::Refused {
        reason: reason.into(),
    }
}

/// Checks the token and signs the CSR.
async fn enroll(fleet: &Fleet, request: EnrollRequest) -> EnrollResponse {
    if !valid_instance_id(&request.instance_id) {
        return refuse("instance id must be 1-128 letters, digits, '-', '_', '.' or ':'");
    }
    let now = clock::now_ms();
    let digest = secret::digest(&request.join_token);
    // An instance id a live agent holds is refused before a use of the
    // token is spent, unless an admin made the token to replace it.
    let holder = match fleet.store.agent_by_instance(&request.instance_id) {
        Ok(holder) => holder.filter(|old| old.state != AgentState::Revoked),
        Err(err) => {
            tracing::error!(error = %err, "store failure during enrollment");
            return refuse("controller store failure; try again");
        }
    };
    if let Some(old) = &holder {
        let replace = matches!(fleet.store.join_token(&digest), Ok(Some(t)) if t.replace);
        if !replace {
            tracing::warn!(instance_id = %request.instance_id, agent_id = %old.agent_id, "enrollment refused: instance id in use");
            return refuse(format!(
                "{INSTANCE_IN_USE}: instance {} is enrolled as agent {} ({:?}); enrolling it again needs a join token an admin made with replace",
                old.instance_id, old.agent_id, old.state
            ));
        }
    }
    let token = match fleet.store.use_join_token(&digest, now) {
        Ok(JoinOutcome::Accepted(token)) => token,
        Ok(JoinOutcome::Unknown) => return refused_log(&request, "join token unknown"),
        Ok(JoinOutcome::Expired) => return refused_log(&request, "join token expired"),
        Ok(JoinOutcome::Revoked) => return refused_log(&request, "join token revoked"),
        Ok(JoinOutcome::UsedUp) => return refused_log(&request, "join token used up"),
        Err(err) => {
            tracing::error!(error = %err, "store failure during enrollment");
            return refuse("controller store failure; try again");
        }
    };
    if holder.is_some() && !token.replace {
        return refused_log(&request, INSTANCE_IN_USE);
    }
    let agent_id = format!(
        "ag-{}",
        flotilla_common::ids::random_alphanumeric(12).to_ascii_lowercase()
    );
    let cert = match fleet.pki.sign_agent(&agent_id, &request.csr_der) {
        Ok(cert) => cert,
        Err(err) => return refused_log(&request, &format!("certificate request refused: {err}")),
    };
    let fingerprint = flotilla_common::tls::fingerprint(&cert);
    // A replacing token revokes the instance's previous identity.
    match fleet.store.agent_by_instance(&request.instance_id) {
        Ok(Some(mut old)) if old.state != AgentState::Revoked => {
            tracing::warn!(agent_id = %old.agent_id, instance_id = %old.instance_id, join_token_id = %token.id, "instance re-enrolled with a replacing token; previous identity revoked");
            old.state = AgentState::Revoked;
            old.state_since_ms = now;
            fleet.registry.disconnect(
                &old.agent_id,
                codes::UNAUTHORIZED,
                b"identity replaced by a new enrollment",
            );
            if let Err(err) = fleet.store.put_agent(&old) {
                tracing::error!(error = %err, "cannot revoke the previous identity");
                return refuse("controller store failure; try again");
            }
        }
        Ok(_) => {}
        Err(err) => {
            tracing::error!(error = %err, "store failure during enrollment");
            return refuse("controller store failure; try again");
        }
    }
    let agent = AgentRecord {
        agent_id: agent_id.clone(),
        instance_id: request.instance_id.clone(),
        hostname: request.hostname.chars().take(253).collect(),
        cert_fingerprint: fingerprint,
        enrolled_ms: now,
        pin: token.pin.clone(),
        pool: token.pool.clone(),
        labels: Default::default(),
        state: AgentState::Enrolled,
        state_since_ms: now,
        last_seen_ms: None,
        facts: None,
        acked_generation: 0,
        lifecycle_id: 0,
        drain: None,
        at_risk_ms: None,
    };
    let stored = fleet.store.insert_agent(&agent).and_then(|()| {
        let event = crate::events::Event::AgentEnrolled {
            agent_id: &agent_id,
            join_token_id: &token.id,
            pool: &token.pool,
        };
        fleet.store.record(
            &event,
            token.pin.as_ref().map(|p| p.stack_id.as_str()),
            Some(&agent.instance_id),
            now,
        )
    });
    if let Err(err) = stored {
        tracing::error!(error = %err, "store failure during enrollment");
        return refuse("controller store failure; try again");
    }
    if let Err(err) = fleet.store.flush().await {
        tracing::error!(error = %err, "store flush failed during enrollment");
        return refuse("controller store failure; try again");
    }
    tracing::info!(agent_id = %agent_id, instance_id = %agent.instance_id, join_token_id = %token.id, pool = %agent.pool, "agent enrolled");
    EnrollResponse::Accepted {
        agent_id,
        instance_id: agent.instance_id,
        cert_der: cert.to_vec(),
        ca_der: fleet.pki.ca_der.to_vec(),
    }
}

fn refused_log(request: &EnrollRequest, reason: &str) -> EnrollResponse {
    tracing::warn!(instance_id = %request.instance_id, reason, "enrollment refused");
    refuse(reason)
}
