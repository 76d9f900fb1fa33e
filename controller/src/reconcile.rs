//! The stack reconciler: derives each stack's status from what is placed
//! and reported, and moves stacks along (`DELETE_IN_PROGRESS` to
//! `DELETE_COMPLETE`, `*_IN_PROGRESS` to `*_COMPLETE`).
//!
//! It is level-triggered and idempotent: each pass looks at the whole state
//! and writes only what differs, so a missed nudge costs at most one tick.

use crate::clock;
use crate::store::{StackRecord, StackStatus, Store, StoreResult};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How often the reconciler looks even without a nudge.
const TICK: Duration = Duration::from_secs(10);

/// The status a stack should move to, or `None` to leave it.
///
/// `placed` is how many containers of the stack are currently placed on
/// agents. Until the fleet link places work, that is always zero, so a
/// deletion completes at once and a stack whose configurations all want
/// zero instances is complete.
pub fn next_status(stack: &StackRecord, body: &Value, placed: usize) -> Option<StackStatus> {
    let wanted: u64 = body
        .get("configurations")
        .and_then(Value::as_array)
        .map(|configs| {
            configs
                .iter()
                .filter_map(|c| {
                    c.pointer("/provision/instance_count")
                        .and_then(Value::as_u64)
                })
                .sum()
        })
        .unwrap_or(0);
    match stack.stack_status {
        StackStatus::DeleteInProgress if placed == 0 => Some(StackStatus::DeleteComplete),
        StackStatus::CreateInProgress if wanted == 0 => Some(StackStatus::CreateComplete),
        StackStatus::UpdateInProgress if wanted == 0 => Some(StackStatus::UpdateComplete),
        _ => None,
    }
}

/// One pass over every stack. Returns how many stacks changed.
pub fn reconcile_once(store: &Store) -> StoreResult<usize> {
    let mut changed = 0;
    for stack in store.stacks()? {
        let span = tracing::info_span!("reconcile", stack_id = %stack.stack_id);
        let _guard = span.enter();
        let body = store
            .version_by_seq(&stack.stack_id, stack.latest_seq)?
            .and_then(|version| serde_json::from_str(&version.body).ok())
            .unwrap_or(Value::Null);
        let Some(status) = next_status(&stack, &body, 0) else {
            continue;
        };
        let now = clock::now_ms();
        store.set_stack_status(&stack.stack_id, status, None, now)?;
        store.append_event(
            "stack.status",
            Some(&stack.stack_id),
            None,
            clock::rfc3339_ms(now),
            json!({ "from": stack.stack_status, "to": status }),
        )?;
        tracing::info!(from = ?stack.stack_status, to = ?status, "stack status changed");
        changed += 1;
    }
    Ok(changed)
}

/// Runs passes on every nudge and every [`TICK`] until the process ends.
pub async fn run(store: Store, nudge: Arc<Notify>) {
    loop {
        match reconcile_once(&store) {
            Ok(0) => {}
            Ok(_) => {
                if let Err(err) = store.flush().await {
                    tracing::error!(error = %err, "flush after reconcile failed");
                }
            }
            Err(err) => tracing::error!(error = %err, "reconcile pass failed"),
        }
        tokio::select! {
            () = nudge.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
}
