//! Join tokens: what an operator hands a new VM so it can enroll. Shared by
//! the REST endpoints and `flotilla-controller join-token`.

use crate::auth::secret;
use crate::clock;
use crate::store::{JoinTokenRecord, Pin, Store, StoreResult};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Default lifetime of a join token.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// A newly created token: the only time its secret is known.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewJoinToken {
    pub id: String,
    /// The secret to pass to `flotilla-agent enroll --join-token`.
    pub token: String,
    /// RFC 3339.
    pub expires: String,
    pub max_uses: u32,
    /// `sha256:...` of the fleet CA, for `--ca-fingerprint`.
    pub ca_fingerprint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    /// The pool the enrolled agents join.
    pub pool: String,
    /// Whether it may replace the identity of an instance id already
    /// enrolled.
    #[serde(default)]
    pub replace: bool,
}

/// What a new token allows.
#[derive(Debug, Clone)]
pub struct JoinTokenOptions {
    pub ttl: Duration,
    pub max_uses: u32,
    pub pin: Option<Pin>,
    pub pool: String,
    pub replace: bool,
}

/// A token as listed (no secret).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JoinTokenInfo {
    pub id: String,
    pub created: String,
    pub expires: String,
    pub max_uses: u32,
    pub uses: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
    pub pool: String,
    #[serde(default)]
    pub replace: bool,
    /// `active`, `expired`, `used_up` or `revoked`.
    pub state: String,
}

impl JoinTokenInfo {
    /// The listing form of a stored token, as of `now_ms`.
    pub fn from_record(token: &JoinTokenRecord, now_ms: i64) -> Self {
        let state = if token.revoked_ms.is_some() {
            "revoked"
        } else if token.expires_ms <= now_ms {
            "expired"
        } else if token.uses >= token.max_uses {
            "used_up"
        } else {
            "active"
        };
        JoinTokenInfo {
            id: token.id.clone(),
            created: clock::rfc3339_ms(token.created_ms),
            expires: clock::rfc3339_ms(token.expires_ms),
            max_uses: token.max_uses,
            uses: token.uses,
            stack_id: token.pin.as_ref().map(|p| p.stack_id.clone()),
            flag: token.pin.as_ref().map(|p| p.flag.clone()),
            revoked: token.revoked_ms.map(clock::rfc3339_ms),
            pool: token.pool.clone(),
            replace: token.replace,
            state: state.into(),
        }
    }
}

/// Whether `token` can still enroll an agent at `now_ms` (what the join
/// token quota counts).
pub fn is_active(token: &JoinTokenRecord, now_ms: i64) -> bool {
    token.revoked_ms.is_none() && token.expires_ms > now_ms && token.uses < token.max_uses
}

/// Creates a join token.
pub fn create(
    store: &Store,
    ca_fingerprint: &str,
    user_id: &str,
    options: JoinTokenOptions,
) -> StoreResult<NewJoinToken> {
    let JoinTokenOptions {
        ttl,
        max_uses,
        pin,
        pool,
        replace,
    } = options;
    let now = clock::now_ms();
    let token = format!("fjt_{}", flotilla_common::ids::random_alphanumeric(40));
    let record = JoinTokenRecord {
        id: format!("jt-{}", flotilla_common::ids::random_alphanumeric(10)),
        token_sha256: secret::digest(&token),
        created_ms: now,
        expires_ms: now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
        max_uses,
        uses: 0,
        pin: pin.clone(),
        pool: pool.clone(),
        replace,
        user_id: user_id.to_owned(),
        revoked_ms: None,
    };
    store.insert_join_token(&record)?;
    tracing::info!(join_token_id = %record.id, max_uses, pinned = pin.is_some(), pool = %pool, replace, "join token created");
    Ok(NewJoinToken {
        id: record.id,
        token,
        expires: clock::rfc3339_ms(record.expires_ms),
        max_uses,
        ca_fingerprint: ca_fingerprint.to_owned(),
        stack_id: pin.as_ref().map(|p| p.stack_id.clone()),
        flag: pin.map(|p| p.flag),
        pool,
        replace,
    })
}

/// Tokens visible to a user (all of them for an admin).
pub fn list(store: &Store, user_id: &str, admin: bool) -> StoreResult<Vec<JoinTokenInfo>> {
    let now = clock::now_ms();
    let mut tokens: Vec<JoinTokenInfo> = store
        .join_tokens()?
        .iter()
        .filter(|t| admin || t.user_id == user_id)
        .map(|t| JoinTokenInfo::from_record(t, now))
        .collect();
    tokens.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    Ok(tokens)
}

/// Revokes a token the user may see; `None` when there is none.
pub fn revoke(
    store: &Store,
    id: &str,
    user_id: &str,
    admin: bool,
) -> StoreResult<Option<JoinTokenInfo>> {
    let visible = store
        .join_tokens()?
        .iter()
        .any(|t| t.id == id && (admin || t.user_id == user_id));
    if !visible {
        return Ok(None);
    }
    let now = clock::now_ms();
    Ok(store
        .revoke_join_token(id, now)?
        .map(|t| JoinTokenInfo::from_record(&t, now)))
}
