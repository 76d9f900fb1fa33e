//! The host-port routes the agent last applied, per slot: read back at
//! start so a restarted agent writes the same table the kernel already
//! holds, and traffic is never cut while it starts.

use super::holds::key;
use super::{AgentStore, StateError};
use crate::traffic::Route;
use std::collections::BTreeMap;

impl AgentStore {
    /// Records a slot's routes (none: forgets them), on disk before it
    /// returns.
    pub async fn put_routes(
        &self,
        stack_id: &str,
        flag: &str,
        routes: &[Route],
    ) -> Result<(), StateError> {
        if routes.is_empty() {
            self.routes.remove(key(stack_id, flag))?;
        } else {
            let value =
                serde_json::to_vec(routes).map_err(|err| StateError::Corrupt(err.to_string()))?;
            self.routes.insert(key(stack_id, flag), value)?;
        }
        self.flush().await
    }

    /// Every slot's routes.
    pub fn routes(&self) -> Result<BTreeMap<(String, String), Vec<Route>>, StateError> {
        let mut all = BTreeMap::new();
        for item in self.routes.iter() {
            let (k, v) = item?;
            let text = String::from_utf8_lossy(&k).into_owned();
            let Some((stack, flag)) = text.split_once('\0') else {
                continue;
            };
            let routes: Vec<Route> =
                serde_json::from_slice(&v).map_err(|err| StateError::Corrupt(err.to_string()))?;
            all.insert((stack.to_owned(), flag.to_owned()), routes);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::Protocol;
    use std::net::Ipv4Addr;

    #[tokio::test]
    async fn routes_survive_a_reopen_and_empty_ones_are_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let route = Route {
            protocol: Protocol::Tcp,
            host_ip: Some(Ipv4Addr::LOCALHOST),
            host_port: 8081,
            target: Ipv4Addr::new(172, 18, 0, 2),
            target_port: 80,
        };
        {
            let store = AgentStore::open(dir.path()).expect("open");
            store
                .put_routes("st-a", "Web01", std::slice::from_ref(&route))
                .await
                .expect("put");
            store
                .put_routes("st-a", "Job01", std::slice::from_ref(&route))
                .await
                .expect("put");
            store
                .put_routes("st-a", "Job01", &[])
                .await
                .expect("forget");
        }
        let store = AgentStore::open(dir.path()).expect("reopen");
        let all = store.routes().expect("read");
        assert_eq!(all.len(), 1);
        assert_eq!(all[&("st-a".to_owned(), "Web01".to_owned())], vec![route]);
    }
}
