//! A session's writer: queued messages, and every new desired state as a
//! header, one frame per placement and an end marker (`wire::parts`), so
//! no number of stacks on an agent makes a frame too large. A generation
//! that a newer one overtakes while it is being sent is abandoned (the
//! agent drops the unfinished one when the next header comes).

use super::Fleet;
use crate::store::{DesiredRecord, PlacementRecord};
use flotilla_common::wire::messages::{ControllerMessage, Placement};
use flotilla_common::wire::{frame, parts};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// The generation last pushed on a session and when, for the ack latency.
pub(super) type Pushed = Arc<std::sync::Mutex<Option<(u64, Instant)>>>;

/// How sending a generation went.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    /// Every part went, then the end marker.
    Whole,
    /// A newer generation came while this one was sent; it goes next.
    Overtaken,
    /// A part would not fit in a frame (it cannot, as the container
    /// section is capped at apply and the frame cap leaves room for the
    /// rest): the end went early, so the agent refuses the generation
    /// and keeps what it runs, and the session stays up.
    Cut,
}

/// Sends queued messages and every new desired state, in order.
pub(super) async fn write_loop(
    fleet: Arc<Fleet>,
    mut send: quinn::SendStream,
    mut out: mpsc::Receiver<ControllerMessage>,
    mut desired: watch::Receiver<Arc<DesiredRecord>>,
    mut sent_generation: u64,
    pushed: Pushed,
) {
    let max = fleet.settings.max_frame;
    loop {
        let current = desired.borrow_and_update().clone();
        if current.generation != sent_generation {
            if let Ok(mut slot) = pushed.lock() {
                *slot = Some((current.generation, Instant::now()));
            }
            let sent = match send_generation(&fleet, &mut send, &current, &desired).await {
                Ok(sent) => sent,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot push desired state");
                    return;
                }
            };
            tracing::debug!(generation = current.generation, placements = current.placements.len(), outcome = ?sent, "desired state pushed");
            if sent == Sent::Overtaken {
                continue;
            }
            sent_generation = current.generation;
            fleet.metrics.desired_pushes.inc();
        }
        tokio::select! {
            changed = desired.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            message = out.recv() => {
                let Some(message) = message else { return };
                if let Err(err) = frame::write(&mut send, &message, max).await {
                    tracing::warn!(error = %err, "cannot write to agent");
                    return;
                }
            }
        }
    }
}

/// Frames of a generation are written in batches of about this many
/// bytes: a small generation goes in one write, as one frame did, and a
/// large one never holds more than this (and one part) in memory.
const BATCH_BYTES: usize = 256 * 1024;

/// Sends one generation, part by part, giving up between batches when a
/// newer generation is waiting.
async fn send_generation(
    fleet: &Fleet,
    send: &mut quinn::SendStream,
    current: &DesiredRecord,
    desired: &watch::Receiver<Arc<DesiredRecord>>,
) -> Result<Sent, frame::FrameError> {
    let max = fleet.settings.max_frame;
    let tokens = fleet.stack_tokens.of(
        &fleet.store,
        current.placements.iter().map(|p| p.stack_id.as_str()),
    );
    let placements = current
        .placements
        .iter()
        .map(|p| to_wire(p, tokens.get(p.stack_id.as_str()).cloned()));
    let mut batch: Vec<u8> = Vec::new();
    for message in parts::pieces(current.generation, placements) {
        let payload = frame::encode(&message)?;
        if payload.len() > max {
            if let ControllerMessage::DesiredPart(part) = &message {
                tracing::error!(
                    stack_id = %part.placement.stack_id,
                    flag = %part.placement.flag,
                    bytes = payload.len(),
                    max,
                    "a placement does not fit in a frame; generation not sent"
                );
            }
            let end = ControllerMessage::DesiredEnd {
                generation: current.generation,
            };
            frame::write(&mut batch, &end, max).await?;
            send.write_all(&batch).await.map_err(std::io::Error::from)?;
            return Ok(Sent::Cut);
        }
        if batch.len() + payload.len() > BATCH_BYTES && !batch.is_empty() {
            send.write_all(&batch).await.map_err(std::io::Error::from)?;
            batch.clear();
            if desired.has_changed().unwrap_or(false) {
                return Ok(Sent::Overtaken);
            }
        }
        frame::write_payload(&mut batch, &payload, max).await?;
    }
    send.write_all(&batch).await.map_err(std::io::Error::from)?;
    Ok(Sent::Whole)
}

/// The wire form of one placement, with its stack's token.
fn to_wire(placement: &PlacementRecord, auth_token: Option<String>) -> Placement {
    Placement {
        stack_id: placement.stack_id.clone(),
        flag: placement.flag.clone(),
        version_id: placement.version_id.clone(),
        spec_json: placement.spec_json.clone(),
        auth_token: auth_token.unwrap_or_default(),
        pool: placement.pool.clone(),
        policy: placement.policy.clone(),
        scoped_volumes: placement.scoped_volumes,
        held: placement.held,
    }
}
