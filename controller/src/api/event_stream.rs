//! The live event stream: `GET /v3/events` with `Accept:
//! text/event-stream` (or `?follow=true`) answers with Server-Sent Events.
//!
//! Each event goes out with its id as the SSE `id`, its type as the SSE
//! `event` and the event record as JSON `data`. A client that reconnects
//! with `Last-Event-ID` (or `since`) gets everything after that id, then
//! the live tail: the store writes events in id order (see
//! `Store::event_order`), so reading "after the last id sent" neither
//! skips nor repeats one. Idle streams carry a comment every
//! [`HEARTBEAT`] so proxies and clients see the connection alive; the
//! stream ends when the server shuts down, and within [`RECHECK`] of the
//! caller's token or client being revoked (or the token expiring).

use super::caller::Operator;
use super::state::AppState;
use crate::store::{EventFilter, EventRecord, EventVisibility};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

/// How often an idle stream says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// How often a stream re-checks its caller's token and client.
pub const RECHECK: Duration = Duration::from_secs(1);
/// Events read from the store at a time.
const PAGE: usize = 500;

/// Who reads, and what they asked for.
struct Follower {
    state: AppState,
    filter: EventFilter,
    operator: Operator,
    visibility: EventVisibility,
    after: u64,
    ready: VecDeque<EventRecord>,
    latest: tokio::sync::watch::Receiver<u64>,
    /// When the caller's credentials were last found valid.
    checked: std::time::Instant,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.state.fleet.metrics.event_streams.dec();
        tracing::info!(after = self.after, "event stream closed");
    }
}

impl Follower {
    /// Whether the token the stream was opened with (and its client)
    /// still holds.
    fn still_allowed(&self) -> bool {
        match crate::auth::tokens::authenticate_digest(
            &self.state.store,
            &self.operator.token_digest,
        ) {
            Ok(_) => true,
            Err(err) => {
                tracing::info!(reason = %err, "event stream ended: its credentials no longer hold");
                false
            }
        }
    }

    /// Reads the next page after `after` into `ready`; false when none.
    fn fill(&mut self) -> bool {
        let page = match self.state.store.events_after(self.after, PAGE) {
            Ok(page) => page,
            Err(err) => {
                tracing::error!(error = %err, "event stream cannot read the store");
                return false;
            }
        };
        let Some(last) = page.last().map(|e| e.id) else {
            return false;
        };
        self.after = last;
        for event in page {
            let wanted = self.filter.matches_fields(&event)
                && self.visibility.sees(
                    &self.state.store,
                    &self.operator.user_id,
                    self.operator.admin,
                    &event,
                );
            if wanted {
                self.ready.push_back(event);
            }
        }
        true
    }
}

fn to_sse(event: &EventRecord) -> Event {
    Event::default()
        .id(event.id.to_string())
        .event(event.kind.clone())
        .data(serde_json::to_string(event).unwrap_or_else(|_| "{}".into()))
}

/// One event of the stream as the document describes it: `id` and
/// `event` name it, `data` is the event as JSON text.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct StreamEvent {
    pub id: String,
    pub event: String,
    pub data: String,
}

/// The SSE response: events matching `filter` after `after`, then live.
pub fn follow(
    state: AppState,
    operator: Operator,
    filter: EventFilter,
    after: u64,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let latest = state.store.follow_events();
    let stopping = state.stopping.clone();
    let follower = Follower {
        state,
        filter,
        operator,
        visibility: EventVisibility::default(),
        after,
        ready: VecDeque::new(),
        latest,
        checked: std::time::Instant::now(),
    };
    follower.state.fleet.metrics.event_streams.inc();
    tracing::info!(after, "event stream opened");
    let events = stream::unfold(follower, move |mut f| {
        let mut stopping = stopping.clone();
        async move {
            loop {
                if f.checked.elapsed() >= RECHECK {
                    if !f.still_allowed() {
                        return None;
                    }
                    f.checked = std::time::Instant::now();
                }
                if let Some(event) = f.ready.pop_front() {
                    return Some((Ok(to_sse(&event)), f));
                }
                if *stopping.borrow() {
                    return None;
                }
                // Mark what is known as seen before reading, so an event
                // written meanwhile wakes the wait below.
                f.latest.borrow_and_update();
                if f.fill() {
                    continue;
                }
                tokio::select! {
                    changed = f.latest.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                    _ = stopping.wait_for(|stop| *stop) => return None,
                    () = tokio::time::sleep(RECHECK) => {}
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
}
