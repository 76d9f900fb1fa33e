//! Creating, listing and revoking API clients; shared by the admin REST
//! endpoints and the `flotilla-controller client` command.

use super::secret;
use crate::clock;
use crate::store::{ClientRecord, Store, StoreResult};
use serde::{Deserialize, Serialize};

/// A freshly created client: the only time its secret is known in plain.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewClient {
    pub client_id: String,
    pub client_secret: String,
    pub user_id: String,
    pub username: String,
    pub admin: bool,
}

/// A client as listed: everything but the secret.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClientInfo {
    pub client_id: String,
    pub user_id: String,
    pub username: String,
    pub admin: bool,
    /// RFC 3339 with milliseconds.
    pub created: String,
    /// RFC 3339 with milliseconds; absent while the client is valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

impl From<&ClientRecord> for ClientInfo {
    fn from(client: &ClientRecord) -> Self {
        ClientInfo {
            client_id: client.client_id.clone(),
            user_id: client.user_id.clone(),
            username: client.username.clone(),
            admin: client.admin,
            created: clock::rfc3339_ms(client.created_ms),
            revoked: client.revoked_ms.map(clock::rfc3339_ms),
        }
    }
}

/// Creates a client for `username` (creating the user when new). With
/// `fixed` credentials (bootstrap automation) those are used instead of
/// random ones.
pub fn create(
    store: &Store,
    username: &str,
    admin: bool,
    fixed: Option<(String, String)>,
) -> StoreResult<NewClient> {
    let now = clock::now_ms();
    let user = store.ensure_user(username, now)?;
    let (client_id, client_secret) = fixed.unwrap_or_else(|| {
        (
            flotilla_common::ids::client_id(&user.user_id),
            flotilla_common::ids::random_alphanumeric(secret::CLIENT_SECRET_LEN),
        )
    });
    store.insert_client(&ClientRecord {
        client_id: client_id.clone(),
        secret_sha256: secret::digest(&client_secret),
        user_id: user.user_id.clone(),
        username: user.username.clone(),
        admin,
        created_ms: now,
        revoked_ms: None,
    })?;
    tracing::info!(client_id = %client_id, username = %user.username, admin, "client created");
    Ok(NewClient {
        client_id,
        client_secret,
        user_id: user.user_id,
        username: user.username,
        admin,
    })
}

/// Every client, without secrets.
pub fn list(store: &Store) -> StoreResult<Vec<ClientInfo>> {
    Ok(store.clients()?.iter().map(ClientInfo::from).collect())
}

/// Revokes a client; `None` when it does not exist.
pub fn revoke(store: &Store, client_id: &str) -> StoreResult<Option<ClientInfo>> {
    let revoked = store.revoke_client(client_id, clock::now_ms())?;
    if revoked.is_some() {
        tracing::info!(client_id = %client_id, "client revoked");
    }
    Ok(revoked.as_ref().map(ClientInfo::from))
}

/// Valid usernames: what fits in a log line and a URL without escaping.
pub fn check_username(username: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&username.len())
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err("username must be 1-64 characters of letters, digits, '-', '_', '.', '@'".into())
    }
}
