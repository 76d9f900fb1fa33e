//! What every new version must pass before it is stored: a valid body, no
//! repeated flag, container sections within the operator's limit, pools
//! the owner may use, and those pools' container policies.

use super::error::{Denial, StackError, StackResult};
use crate::pools::PoolChoice;
use crate::store::Store;
use crate::template::{self, validate};
use serde_json::Value;
use std::collections::BTreeMap;

/// The pool of each configuration (by flag) of a body that passed.
pub type Pools = BTreeMap<String, String>;

/// Checks `body` for a stack of `owner` (`admin` when the owner is an
/// admin acting on their own stack) and resolves its pools. The order
/// matters to callers: a malformed body is refused before its size, its
/// size before its pools, its pools before their policies.
pub fn check(
    store: &Store,
    max_container_section: usize,
    owner: &str,
    admin: bool,
    body: &Value,
) -> StackResult<Pools> {
    check_template(body)?;
    check_sizes(max_container_section, body)?;
    let pools = resolve_pools(store, owner, admin, body)?;
    check_policies(store, body, &pools)?;
    Ok(pools)
}

/// A malformed body lists every problem (repeated flags too); a
/// well-formed one that names a configuration twice is a conflict.
fn check_template(body: &Value) -> StackResult<()> {
    let repeats = validate::repeated_flags(body);
    if let Err(mut problems) = validate::validate(body) {
        problems.extend(repeats);
        return Err(StackError::Invalid(problems));
    }
    if repeats.is_empty() {
        Ok(())
    } else {
        Err(StackError::DuplicateFlag(repeats))
    }
}

/// Container sections larger than `limit` (compact JSON): whatever the
/// stacks, no placement grows past what the fleet link carries.
fn check_sizes(limit: usize, body: &Value) -> StackResult<()> {
    let problems: Vec<validate::Problem> = template::configurations(body)
        .iter()
        .enumerate()
        .filter_map(|(index, config)| {
            let size = config.get("container")?.to_string().len();
            (size > limit).then(|| validate::Problem {
                path: format!("/configurations/{index}/container"),
                message: format!(
                    "the container section is {size} bytes; at most {limit} (max_container_section)"
                ),
            })
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StackError::TooLarge { problems, limit })
    }
}

/// `provision.pool` when given, else the owner's first pool, else
/// `default` for admins.
fn resolve_pools(store: &Store, owner: &str, admin: bool, body: &Value) -> StackResult<Pools> {
    let pools = store.pools()?;
    let mut resolved = BTreeMap::new();
    for (index, config) in template::configurations(body).iter().enumerate() {
        let Some(flag) = config.get("flag").and_then(Value::as_str) else {
            continue;
        };
        let path = format!("/configurations/{index}/provision/pool");
        let requested = match config.pointer("/provision/pool") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name.as_str()),
            Some(_) => {
                return Err(StackError::invalid(
                    path,
                    "pool must be a string naming a pool",
                ))
            }
        };
        let pool = match crate::pools::resolve(requested, &pools, owner, admin) {
            PoolChoice::Pool(pool) => pool,
            PoolChoice::Unknown(name) => return Err(StackError::UnknownPool { name, path }),
            PoolChoice::Forbidden(name) => {
                return Err(StackError::ForbiddenPool {
                    owner: owner.to_owned(),
                    name,
                    path,
                })
            }
            PoolChoice::NoPool => {
                return Err(StackError::NoPool {
                    owner: owner.to_owned(),
                    path,
                })
            }
        };
        resolved.insert(flag.to_owned(), pool);
    }
    Ok(resolved)
}

/// Every violation of the pools' container policies, each with its
/// pointer and the pool that forbids it.
fn check_policies(store: &Store, body: &Value, pools: &Pools) -> StackResult<()> {
    let mut found = Vec::new();
    for (index, config) in template::configurations(body).iter().enumerate() {
        let (Some(flag), Some(container)) = (
            config.get("flag").and_then(Value::as_str),
            config.get("container"),
        ) else {
            continue;
        };
        let Some(pool) = pools.get(flag) else {
            continue;
        };
        let policy = store.pool(pool)?.map(|p| p.policy).unwrap_or_default();
        let Some(spec) = validate::container_spec(container) else {
            continue;
        };
        for violation in flotilla_common::policy::check(&spec, &policy) {
            found.push(Denial {
                path: format!("/configurations/{index}/container{}", violation.path),
                pool: pool.clone(),
                message: format!("pool {pool} does not allow this: {}", violation.message),
            });
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(StackError::PolicyDenied(found))
    }
}
