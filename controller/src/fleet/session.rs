//! One control session per connected agent: identify it by its client
//! certificate, handshake, hello, then push desired state and take acks,
//! heartbeats and status reports until the connection ends.

use super::pending::Pending;
use super::push::{write_loop, Pushed};
use super::registry::Live;
use super::shed::Shed;
use super::Fleet;
use crate::clock;
use crate::store::{AgentRecord, AgentState};
use flotilla_common::wire::messages::{
    AgentMessage, ControllerMessage, Hello, LifecycleEvent, LifecycleReport, StatusReport, Welcome,
};
use flotilla_common::wire::{bounds, codes, frame, handshake, PROTOCOL_VERSION};
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

/// The agent behind a connection's client certificate, if the controller
/// issued that certificate and has not revoked it.
fn identify(fleet: &Fleet, connection: &quinn::Connection) -> Result<AgentRecord, &'static str> {
    let certs = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or("no client certificate (enroll first)")?;
    let leaf = certs
        .first()
        .ok_or("no client certificate (enroll first)")?;
    let fingerprint = flotilla_common::tls::fingerprint(leaf);
    match fleet.store.agent_by_cert(&fingerprint) {
        Ok(Some(agent)) if agent.state != AgentState::Revoked => Ok(agent),
        Ok(Some(_)) => Err("this agent's certificate was revoked"),
        Ok(None) => Err("certificate not issued to any enrolled agent"),
        Err(err) => {
            tracing::error!(error = %err, "store failure identifying an agent");
            Err("controller store failure")
        }
    }
}

/// Runs a control session until the connection ends; `pending` holds its
/// unauthenticated slot until the hello is verified, and sheds it at the
/// deadline.
pub async fn run(fleet: Arc<Fleet>, connection: quinn::Connection, pending: Pending) {
    let remote = connection.remote_address();
    let agent = match identify(&fleet, &connection) {
        Ok(agent) => agent,
        Err(reason) => {
            tracing::warn!(reason, "control connection refused");
            connection.close(codes::UNAUTHORIZED, reason.as_bytes());
            return;
        }
    };
    let span = tracing::info_span!("session", agent_id = %agent.agent_id, instance_id = %agent.instance_id);
    async move {
        let opened = tokio::time::timeout_at(pending.deadline(), open(&fleet, &connection)).await;
        match opened {
            Ok(Some((send, recv, hello))) => {
                pending.authenticated();
                session(fleet, connection, agent, send, recv, hello).await;
            }
            Ok(None) => {}
            Err(_) => {
                fleet.shed(Shed::PreambleTimeout, remote);
                connection.close(codes::TIMED_OUT, b"handshake timed out");
            }
        }
    }
    .instrument(span)
    .await;
}

/// The control stream, both preambles and a hello within its bounds;
/// `None` once the connection is closed with the reason.
async fn open(
    fleet: &Fleet,
    connection: &quinn::Connection,
) -> Option<(quinn::SendStream, quinn::RecvStream, Hello)> {
    let Ok((mut send, mut recv)) = connection.accept_bi().await else {
        tracing::warn!("agent opened no control stream");
        return None;
    };
    if let Err(err) = handshake::receive(&mut recv, PROTOCOL_VERSION).await {
        tracing::warn!(error = %err, "handshake refused");
        let _ = handshake::send(&mut send, PROTOCOL_VERSION).await;
        let _ = send.finish();
        let code = match err {
            handshake::HandshakeError::UnsupportedVersion { .. } => codes::UNSUPPORTED_VERSION,
            _ => codes::PROTOCOL_ERROR,
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        connection.close(code, err.to_string().as_bytes());
        return None;
    }
    handshake::send(&mut send, PROTOCOL_VERSION).await.ok()?;
    let hello = match frame::read::<_, AgentMessage>(&mut recv, fleet.settings.max_frame).await {
        Ok(Some(AgentMessage::Hello(hello))) => hello,
        Err(err) => {
            close_for(connection, &err);
            return None;
        }
        _ => {
            tracing::warn!("agent sent no hello");
            connection.close(codes::PROTOCOL_ERROR, b"expected hello");
            return None;
        }
    };
    if let Err(err) = bounds::check_hello(&hello) {
        tracing::warn!(error = %err, "hello refused");
        connection.close(codes::LIMIT_EXCEEDED, err.to_string().as_bytes());
        return None;
    }
    Some((send, recv, hello))
}

async fn session(
    fleet: Arc<Fleet>,
    connection: quinn::Connection,
    agent: AgentRecord,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    hello: Hello,
) {
    let max = fleet.settings.max_frame;
    let agent_token = match crate::auth::agent_tokens::rotate(&fleet.store, &agent.agent_id) {
        Ok(token) => token,
        Err(err) => {
            tracing::error!(error = %err, "cannot issue the agent's REST token");
            connection.close(codes::SHUTTING_DOWN, b"controller store failure");
            return;
        }
    };
    if let Err(err) = fleet.store.flush().await {
        tracing::error!(error = %err, "flush failed");
        connection.close(codes::SHUTTING_DOWN, b"controller store failure");
        return;
    }
    let session_id = fleet.registry.next_session_id();
    let desired = match fleet.store.desired(&agent.agent_id) {
        Ok(desired) => desired,
        Err(err) => {
            tracing::error!(error = %err, "cannot read desired state");
            connection.close(codes::SHUTTING_DOWN, b"controller store failure");
            return;
        }
    };
    // What the agent says it runs is as good as an ack of it (it is not
    // sent again): the ack itself may have been lost with a controller
    // that stopped before writing it.
    acked(
        &fleet,
        &agent.agent_id,
        hello.generation.min(desired.generation),
    );
    let (desired_tx, desired_rx) = watch::channel(desired);
    let (out_tx, out_rx) = mpsc::channel::<ControllerMessage>(64);
    let live = Live {
        out: out_tx.clone(),
        session_id,
        connection: connection.clone(),
        connected_at: Instant::now(),
        last_seen: Instant::now(),
        facts: Some(hello.facts.clone()),
        desired: desired_tx,
    };
    if let Some(old) = fleet.registry.register(&agent.agent_id, live) {
        old.close(codes::SUPERSEDED, b"superseded by a newer connection");
    }
    mark(&fleet, &agent.agent_id, AgentState::Connected, Some(&hello)).await;
    tracing::info!(generation = hello.generation, "agent connected");

    let welcome = ControllerMessage::Welcome(Welcome {
        agent_id: agent.agent_id.clone(),
        instance_id: agent.instance_id.clone(),
        heartbeat_secs: u32::try_from(fleet.settings.heartbeat.as_secs())
            .unwrap_or(10)
            .max(1),
        acked_seq: fleet.store.agent_seq(&agent.agent_id).unwrap_or(0),
        acked_lifecycle: fleet
            .store
            .agent(&agent.agent_id)
            .ok()
            .flatten()
            .map_or(0, |a| a.lifecycle_id),
        api_url: fleet.settings.api_url.clone(),
        agent_token,
    });
    // The welcome goes first, before any desired state.
    if let Err(err) = frame::write(&mut send, &welcome, max).await {
        tracing::warn!(error = %err, "cannot welcome the agent");
        if fleet.registry.unregister(&agent.agent_id, session_id) {
            mark(&fleet, &agent.agent_id, AgentState::Lost, None).await;
        }
        return;
    }
    fleet.metrics.sessions_opened.inc();
    let pushed: Pushed = Default::default();
    let writer = tokio::spawn(write_loop(
        fleet.clone(),
        send,
        out_rx,
        desired_rx,
        hello.generation,
        pushed.clone(),
    ));

    let end = read_loop(&fleet, &agent, &mut recv, &out_tx, &connection, &pushed).await;
    match end {
        Ok(()) => tracing::info!("agent closed its session"),
        Err(reason) => tracing::info!(reason = %reason, "session ended"),
    }
    writer.abort();
    if fleet.registry.unregister(&agent.agent_id, session_id) {
        mark(&fleet, &agent.agent_id, AgentState::Lost, None).await;
    }
}

/// Closes the connection with the code that fits a frame error.
fn close_for(connection: &quinn::Connection, err: &frame::FrameError) {
    let code = match err {
        frame::FrameError::TooLarge { .. } => codes::FRAME_TOO_LARGE,
        frame::FrameError::Io(_) => return,
        _ => codes::PROTOCOL_ERROR,
    };
    tracing::warn!(error = %err, code = codes::describe(code), "closing connection");
    connection.close(code, err.to_string().as_bytes());
}

/// Reads the agent's messages until the stream or connection ends.
async fn read_loop(
    fleet: &Fleet,
    agent: &AgentRecord,
    recv: &mut quinn::RecvStream,
    out: &mpsc::Sender<ControllerMessage>,
    connection: &quinn::Connection,
    pushed: &Pushed,
) -> Result<(), String> {
    let max = fleet.settings.max_frame;
    loop {
        let message = match frame::read::<_, AgentMessage>(recv, max).await {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(()),
            Err(err) => {
                close_for(connection, &err);
                return Err(err.to_string());
            }
        };
        fleet.registry.seen(&agent.agent_id, None);
        match message {
            AgentMessage::Ack { generation } => {
                fleet.metrics.desired_acks.inc();
                let sent = pushed.lock().ok().and_then(|slot| *slot);
                if let Some((pushed_generation, at)) = sent {
                    if pushed_generation == generation {
                        fleet
                            .metrics
                            .ack_latency
                            .observe(at.elapsed().as_secs_f64());
                    }
                }
                acked(fleet, &agent.agent_id, generation)
            }
            AgentMessage::DesiredRefused { generation, reason } => {
                fleet.metrics.desired_refused.inc();
                let reason: String = reason.chars().take(1024).collect();
                tracing::error!(generation, reason = %reason, "agent refused a desired state; it keeps the one it has");
            }
            AgentMessage::Heartbeat(facts) => {
                if let Err(err) = bounds::check_facts(&facts) {
                    connection.close(codes::LIMIT_EXCEEDED, err.to_string().as_bytes());
                    return Err(err.to_string());
                }
                fleet.registry.seen(&agent.agent_id, Some(facts))
            }
            AgentMessage::Status(reports) => {
                let seq = statuses(fleet, agent, reports).await?;
                if out
                    .send(ControllerMessage::StatusAck { seq })
                    .await
                    .is_err()
                {
                    return Err("writer gone".into());
                }
            }
            AgentMessage::Lifecycle(report) => {
                let id = report.id;
                lifecycle(fleet, agent, report).await?;
                if out
                    .send(ControllerMessage::LifecycleAck { id })
                    .await
                    .is_err()
                {
                    return Err("writer gone".into());
                }
            }
            AgentMessage::Hello(_) => {
                connection.close(codes::PROTOCOL_ERROR, b"hello sent twice");
                return Err("hello sent twice".into());
            }
        }
    }
}

/// Applies a lifecycle report (once: its id is recorded with it) and makes
/// it durable before the ack.
async fn lifecycle(
    fleet: &Fleet,
    agent: &AgentRecord,
    report: LifecycleReport,
) -> Result<(), String> {
    use super::drain::{self, Applied, Source};
    fleet.metrics.lifecycle_reports.inc();
    let applied = match &report.event {
        LifecycleEvent::Notice(notice) => {
            let valid = notice.cloud.len() <= 32 && notice.action.len() <= 32;
            if !valid {
                return Err("lifecycle notice with oversized fields".into());
            }
            drain::apply_notice(
                &fleet.store,
                &agent.agent_id,
                notice,
                Some(report.id),
                Source::Link,
                fleet.settings.drain_on_rebalance,
            )
        }
        LifecycleEvent::Drained { stopped } => drain::mark_drained(
            &fleet.store,
            &agent.agent_id,
            Some(*stopped),
            Some(report.id),
        ),
    }
    .map_err(|err| err.to_string())?;
    fleet.store.flush().await.map_err(|err| err.to_string())?;
    if applied == Applied::Recorded {
        fleet.nudge();
    }
    tracing::debug!(id = report.id, applied = ?applied, "lifecycle report stored");
    Ok(())
}

/// Records an acknowledged generation.
fn acked(fleet: &Fleet, agent_id: &str, generation: u64) {
    let recorded = fleet
        .store
        .record_ack(agent_id, generation)
        .and_then(|agent| {
            let desired = fleet.store.desired(agent_id)?;
            Ok(agent.map(|agent| crate::scheduler::ack_matters(&agent, &desired, generation)))
        });
    match recorded {
        Ok(matters) => {
            tracing::debug!(generation, "desired state acknowledged");
            if matters == Some(true) {
                fleet.nudge();
            }
        }
        Err(err) => {
            tracing::error!(error = %err, "cannot record ack");
            fleet.nudge();
        }
    }
}

/// Applies a batch of status reports exactly once and returns the sequence
/// number to acknowledge. Reports about stacks never placed on this agent
/// are dropped (and acknowledged, so they leave its outbox).
async fn statuses(
    fleet: &Fleet,
    agent: &AgentRecord,
    reports: Vec<StatusReport>,
) -> Result<u64, String> {
    let placed = fleet
        .store
        .desired(&agent.agent_id)
        .map_err(|err| err.to_string())?;
    let placed = &placed.history;
    let Some(up_to) = reports.iter().map(|r| r.seq).max() else {
        return Ok(fleet.store.agent_seq(&agent.agent_id).unwrap_or(0));
    };
    let mut writes = Vec::new();
    for report in reports {
        if !placed.contains(&report.stack_id) {
            tracing::warn!(stack_id = %report.stack_id, seq = report.seq, "status for a stack never placed here; ignored");
            continue;
        }
        writes.push(crate::reports::write(crate::reports::Report {
            stack_id: report.stack_id,
            instance_id: agent.instance_id.clone(),
            status: report.status.to_string(),
            flag: Some(report.flag),
            exit_code: report.exit_code,
            reason: report.reason,
            time_ms: report.time_ms,
            version_id: Some(report.version_id),
            agent_id: Some(agent.agent_id.clone()),
            commit: report.commit,
            seq: report.seq,
            source: crate::reports::Source::Quic,
        }));
    }
    let time = clock::rfc3339_ms(clock::now_ms());
    let applied = fleet
        .store
        .apply_statuses(&agent.agent_id, &time, &writes, up_to)
        .map_err(|err| err.to_string())?;
    fleet.store.flush().await.map_err(|err| err.to_string())?;
    fleet
        .metrics
        .status_reports
        .inc_by(u64::try_from(applied).unwrap_or(0));
    if applied > 0 {
        fleet.nudge();
    }
    tracing::debug!(applied, up_to, "status reports stored");
    Ok(up_to)
}

/// Persists an agent's connection state (with its hello, when connecting)
/// and records the transition as an event.
async fn mark(fleet: &Fleet, agent_id: &str, state: AgentState, hello: Option<&Hello>) {
    let now = clock::now_ms();
    let mut changed = false;
    let updated = fleet.store.update_agent(agent_id, |agent| {
        // A revoked agent stays revoked, whatever its last session did.
        if agent.state == AgentState::Revoked {
            changed = false;
            return;
        }
        changed = agent.state != state;
        agent.state = state;
        if changed {
            agent.state_since_ms = now;
        }
        agent.last_seen_ms = Some(now);
        if let Some(hello) = hello {
            agent.labels = hello.labels.clone();
            agent.facts = Some(hello.facts.clone());
        }
    });
    let result = updated.and_then(|agent| {
        let Some(agent) = agent else {
            return Ok(None);
        };
        if changed {
            let event = crate::events::Event::AgentLink {
                connected: state == AgentState::Connected,
                agent_id: &agent.agent_id,
            };
            fleet.store.record(
                &event,
                agent.pin.as_ref().map(|p| p.stack_id.as_str()),
                Some(&agent.instance_id),
                now,
            )?;
        }
        Ok(Some(changed))
    });
    match result {
        Ok(Some(true)) => {
            if let Err(err) = fleet.store.flush().await {
                tracing::error!(error = %err, "flush failed");
            }
            fleet.nudge();
        }
        Ok(_) => {}
        Err(err) => tracing::error!(error = %err, "cannot record agent state"),
    }
}

/// Marks agents lost that have been silent longer than the lost timeout,
/// closing their connections. Runs until the process ends.
pub async fn watch_silence(fleet: Arc<Fleet>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(deadline) = Instant::now().checked_sub(fleet.settings.lost_after) else {
            continue;
        };
        for (agent_id, session_id, connection) in fleet.registry.silent_since(deadline) {
            tracing::warn!(agent_id = %agent_id, "agent silent too long; marking lost");
            connection.close(codes::TIMED_OUT, b"no heartbeat");
            if fleet.registry.unregister(&agent_id, session_id) {
                mark(&fleet, &agent_id, AgentState::Lost, None).await;
            }
        }
    }
}
