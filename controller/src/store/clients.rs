//! Users and their API clients.

use super::{decode, encode, get, ClientRecord, Store, StoreResult, UserRecord};

impl Store {
    /// Returns the user called `username`, creating it with a fresh id when
    /// it does not exist yet. Safe against two concurrent creations.
    pub fn ensure_user(&self, username: &str, now_ms: i64) -> StoreResult<UserRecord> {
        loop {
            if let Some(user) = get::<UserRecord>(&self.users, "users", username.as_bytes())? {
                return Ok(user);
            }
            let user = UserRecord {
                user_id: flotilla_common::ids::user_id(),
                username: username.to_owned(),
                created_ms: now_ms,
            };
            let bytes = encode("users", &user)?;
            if self
                .users
                .compare_and_swap(username.as_bytes(), None as Option<&[u8]>, Some(bytes))?
                .is_ok()
            {
                return Ok(user);
            }
        }
    }

    /// Stores a new client.
    pub fn insert_client(&self, client: &ClientRecord) -> StoreResult<()> {
        self.clients
            .insert(client.client_id.as_bytes(), encode("clients", client)?)?;
        Ok(())
    }

    /// The client with this id, revoked or not.
    pub fn client(&self, client_id: &str) -> StoreResult<Option<ClientRecord>> {
        get(&self.clients, "clients", client_id.as_bytes())
    }

    /// Every client, ordered by id.
    pub fn clients(&self) -> StoreResult<Vec<ClientRecord>> {
        super::scan(&self.clients, "clients", b"")
    }

    /// Whether any admin client exists (revoked ones count: an operator who
    /// revoked the bootstrap client meant it).
    pub fn has_admin_client(&self) -> StoreResult<bool> {
        for entry in self.clients.iter() {
            let (key, value) = entry?;
            if decode::<ClientRecord>("clients", &key, &value)?.admin {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Marks a client revoked; its tokens stop working at once because every
    /// request re-checks the client. `None` when there is no such client.
    pub fn revoke_client(&self, client_id: &str, now_ms: i64) -> StoreResult<Option<ClientRecord>> {
        super::update(
            &self.clients,
            "clients",
            client_id.as_bytes(),
            |client: &mut ClientRecord| {
                client.revoked_ms.get_or_insert(now_ms);
            },
        )
    }
}
