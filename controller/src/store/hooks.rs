//! Webhook subscriptions, their delivery queue, and the cursor of events
//! already fanned out to them.

use super::{encode, get, scan, Store, StoreResult};
use serde::{Deserialize, Serialize};

const CURSOR: &[u8] = b"hooks_cursor";

/// A subscription: events of the given types go to `url`, signed with
/// `secret` (HMAC-SHA256). Kept in plain because signing needs it; shown
/// once, at creation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HookRecord {
    /// `wh-...`.
    pub id: String,
    /// The user who created it: it gets only that user's stacks' events
    /// (an admin's gets every event).
    pub user_id: String,
    pub admin: bool,
    /// The API client that made it: the hook is disabled (no more
    /// deliveries) once that client is revoked. `None` for hooks made
    /// before hooks recorded their client.
    #[serde(default)]
    pub client_id: Option<String>,
    pub url: String,
    /// Event types (`spot.shutdown`, `stack.status`, ...); empty for all.
    pub events: Vec<String>,
    /// Only this stack's events, when set.
    pub stack_id: Option<String>,
    pub secret: String,
    pub created_ms: i64,
    /// The newest event when it was created: it gets only later ones.
    pub after_event: u64,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Every attempt failed.
    Failed,
}

/// One event on its way to one hook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct DeliveryRecord {
    /// `<hook id>/<event id>`: one delivery per event and hook.
    pub id: String,
    pub hook_id: String,
    pub event_id: u64,
    pub event_type: String,
    pub state: DeliveryState,
    pub attempts: u32,
    /// The receiver's last HTTP status, if it answered.
    pub last_status: Option<u16>,
    /// Why the last attempt failed (no answer, or a non-2xx status).
    pub last_error: Option<String>,
    /// When the next attempt is due (ms since the epoch).
    pub next_attempt_ms: i64,
    pub created_ms: i64,
    pub delivered_ms: Option<i64>,
}

impl Store {
    /// Whether a hook is disabled: the client that made it was revoked (or
    /// is gone).
    pub fn hook_disabled(&self, hook: &HookRecord) -> StoreResult<bool> {
        let Some(client_id) = &hook.client_id else {
            return Ok(false);
        };
        Ok(self
            .client(client_id)?
            .is_none_or(|client| client.revoked_ms.is_some()))
    }

    /// Stores a new subscription.
    pub fn insert_hook(&self, hook: &HookRecord) -> StoreResult<()> {
        self.hooks
            .insert(hook.id.as_bytes(), encode("hooks", hook)?)?;
        Ok(())
    }

    /// Every subscription.
    pub fn hooks(&self) -> StoreResult<Vec<HookRecord>> {
        scan(&self.hooks, "hooks", b"")
    }

    /// One subscription.
    pub fn hook(&self, id: &str) -> StoreResult<Option<HookRecord>> {
        get(&self.hooks, "hooks", id.as_bytes())
    }

    /// The last event id fanned out to hooks (`None` before the first
    /// fan-out).
    pub fn hooks_cursor(&self) -> StoreResult<Option<u64>> {
        Ok(self
            .meta
            .get(CURSOR)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    /// The newest event id written.
    pub fn latest_event_id(&self) -> StoreResult<u64> {
        Ok(match self.events.last()? {
            Some((key, _)) => <[u8; 8]>::try_from(key.as_ref()).map_or(0, u64::from_be_bytes),
            None => 0,
        })
    }

    /// Moves the fan-out cursor.
    pub fn set_hooks_cursor(&self, event_id: u64) -> StoreResult<()> {
        self.meta.insert(CURSOR, &event_id.to_be_bytes())?;
        Ok(())
    }
}
