//! The pool rules as pure functions, table-tested.

use crate::store::{PoolRecord, DEFAULT_POOL};

/// Whether `username` may place stacks in `pool` and create its join
/// tokens.
pub fn may_use(pool: &PoolRecord, username: &str, admin: bool) -> bool {
    admin || pool.users.iter().any(|u| u == username)
}

/// Pool names: 1-63 lowercase letters, digits and '-', starting with a
/// letter or digit (they appear in labels, paths and messages).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    (1..=63).contains(&name.len())
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Which pool a configuration goes to, or why none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolChoice {
    Pool(String),
    /// `provision.pool` names a pool that does not exist.
    Unknown(String),
    /// `provision.pool` names a pool the owner may not use.
    Forbidden(String),
    /// Nothing was named and the owner is in no pool.
    NoPool,
}

/// Resolves a configuration's pool: the one `requested` names, else the
/// owner's pool that was created first, else `default` for admins.
/// `pools` must be oldest first (as [`crate::store::Store::pools`] gives).
pub fn resolve(
    requested: Option<&str>,
    pools: &[PoolRecord],
    username: &str,
    admin: bool,
) -> PoolChoice {
    match requested {
        Some(name) => match pools.iter().find(|p| p.name == name) {
            None => PoolChoice::Unknown(name.to_owned()),
            Some(pool) if may_use(pool, username, admin) => PoolChoice::Pool(pool.name.clone()),
            Some(pool) => PoolChoice::Forbidden(pool.name.clone()),
        },
        None => match pools.iter().find(|p| p.users.iter().any(|u| u == username)) {
            Some(pool) => PoolChoice::Pool(pool.name.clone()),
            None if admin => PoolChoice::Pool(DEFAULT_POOL.to_owned()),
            None => PoolChoice::NoPool,
        },
    }
}

/// A stack that stands in the way of a pool change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Blocker {
    pub stack_id: String,
    pub reason: String,
}

/// One configuration running in a pool, as a pool change must consider it.
pub struct InPool<'a> {
    pub stack_id: &'a str,
    pub owner: &'a str,
    pub flag: &'a str,
    /// What the new policy forbids in its container section (pointers
    /// within the section), already checked by the caller.
    pub violations: Vec<String>,
}

/// The stacks a pool change would break: a user removed while they have
/// stacks there, or a configuration the new policy forbids. Empty means
/// the change may go ahead.
pub fn blockers(old: &PoolRecord, new: &PoolRecord, running: &[InPool<'_>]) -> Vec<Blocker> {
    let removed: Vec<&String> = old
        .users
        .iter()
        .filter(|u| !new.users.contains(u))
        .collect();
    let mut found: Vec<Blocker> = Vec::new();
    for config in running {
        if removed.iter().any(|u| u.as_str() == config.owner) {
            found.push(Blocker {
                stack_id: config.stack_id.to_owned(),
                reason: format!(
                    "user {} has this stack in pool {} (delete or move it first)",
                    config.owner, new.name
                ),
            });
        }
        if !config.violations.is_empty() {
            found.push(Blocker {
                stack_id: config.stack_id.to_owned(),
                reason: format!(
                    "{} uses what the new policy forbids: {}",
                    config.flag,
                    config.violations.join("; ")
                ),
            });
        }
    }
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, created: i64, users: &[&str]) -> PoolRecord {
        PoolRecord {
            name: name.into(),
            users: users.iter().map(|u| (*u).to_owned()).collect(),
            policy: Default::default(),
            created_ms: created,
            updated_ms: created,
        }
    }

    #[test]
    fn resolution_table() {
        let pools = vec![
            pool("default", 0, &[]),
            pool("team-a", 10, &["alice"]),
            pool("team-b", 20, &["bob", "alice"]),
        ];
        let cases: &[(Option<&str>, &str, bool, PoolChoice)] = &[
            (None, "alice", false, PoolChoice::Pool("team-a".into())),
            (None, "bob", false, PoolChoice::Pool("team-b".into())),
            (None, "carol", false, PoolChoice::NoPool),
            (None, "root", true, PoolChoice::Pool("default".into())),
            (
                Some("team-b"),
                "alice",
                false,
                PoolChoice::Pool("team-b".into()),
            ),
            (
                Some("team-a"),
                "bob",
                false,
                PoolChoice::Forbidden("team-a".into()),
            ),
            (
                Some("default"),
                "bob",
                false,
                PoolChoice::Forbidden("default".into()),
            ),
            (
                Some("team-a"),
                "root",
                true,
                PoolChoice::Pool("team-a".into()),
            ),
            (
                Some("nope"),
                "root",
                true,
                PoolChoice::Unknown("nope".into()),
            ),
            (
                Some("nope"),
                "bob",
                false,
                PoolChoice::Unknown("nope".into()),
            ),
        ];
        for (requested, user, admin, expected) in cases {
            assert_eq!(
                &resolve(*requested, &pools, user, *admin),
                expected,
                "{requested:?} {user} admin={admin}"
            );
        }
    }

    #[test]
    fn names() {
        for (name, ok) in [
            ("team-b", true),
            ("default", true),
            ("0x", true),
            ("", false),
            ("-a", false),
            ("Team", false),
            ("a_b", false),
            ("a/b", false),
            (&"a".repeat(64), false),
        ] {
            assert_eq!(valid_name(name), ok, "{name}");
        }
    }

    #[test]
    fn blockers_name_removed_owners_and_forbidden_configurations() {
        let old = pool("team-b", 1, &["bob", "carol"]);
        let new = pool("team-b", 1, &["carol"]);
        let running = [
            InPool {
                stack_id: "s-bob",
                owner: "bob",
                flag: "web",
                violations: vec![],
            },
            InPool {
                stack_id: "s-carol",
                owner: "carol",
                flag: "db",
                violations: vec!["/volumes/0: host path /srv/data is not allowed".into()],
            },
            InPool {
                stack_id: "s-carol2",
                owner: "carol",
                flag: "web",
                violations: vec![],
            },
        ];
        let found = blockers(&old, &new, &running);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].stack_id, "s-bob");
        assert!(found[0].reason.contains("user bob"), "{found:?}");
        assert_eq!(found[1].stack_id, "s-carol");
        assert!(found[1].reason.contains("/volumes/0"), "{found:?}");
        assert!(blockers(&old, &old, &running[..1]).is_empty());
    }
}
