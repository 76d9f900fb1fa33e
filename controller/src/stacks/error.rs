//! Why an operation on a stack was refused: one typed error for every
//! operation, so each refusal has one meaning whatever path asked for it.
//! The REST layer turns each into its status and error code.

use crate::store::{StackStatus, StoreError};
use crate::template::validate::Problem;

/// A container policy violation, with the pool whose policy forbids it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// JSON pointer into the template body.
    pub path: String,
    pub pool: String,
    pub message: String,
}

/// Why a stack operation did not happen. Nothing is stored when one is
/// returned.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The body is not a valid template; every problem is listed.
    #[error("template is invalid")]
    Invalid(Vec<Problem>),
    /// A well-formed template names a configuration twice.
    #[error("two configurations share a flag")]
    DuplicateFlag(Vec<Problem>),
    /// A container section is larger than the operator allows.
    #[error("a container section is larger than max_container_section ({limit} bytes)")]
    TooLarge {
        problems: Vec<Problem>,
        limit: usize,
    },
    /// A pool's container policy forbids what the template asks for.
    #[error("the pool's container policy forbids this")]
    PolicyDenied(Vec<Denial>),
    /// A configuration names a pool that does not exist.
    #[error("pool {name:?} not found")]
    UnknownPool { name: String, path: String },
    /// A configuration names a pool its owner may not use.
    #[error("user {owner} may not use pool {name}")]
    ForbiddenPool {
        owner: String,
        name: String,
        path: String,
    },
    /// The owner is in no pool at all.
    #[error(
        "user {owner} is in no pool; an admin adds users to a pool (PUT /v3/alm/pools/{{name}})"
    )]
    NoPool { owner: String, path: String },
    /// A thing the operation names does not exist (or is not the
    /// caller's, which looks the same).
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    /// A request body names a configuration the stack does not have: the
    /// stack exists, so this is a conflict with its state, not a missing
    /// resource.
    #[error("the stack has no configuration with flag {flag:?}")]
    UnknownFlag { flag: String, path: String },
    /// The stack is being deleted and takes no more changes.
    #[error("stack {stack_id} is {status:?} and takes no more changes")]
    Deleting {
        stack_id: String,
        status: StackStatus,
    },
    /// The operation does not fit the stack's state (no earlier version to
    /// roll back to, ...).
    #[error("{0}")]
    Conflict(String),
    /// The operator went past one of their quotas.
    #[error(transparent)]
    Quota(#[from] crate::quotas::Exceeded),
    /// The store failed, or holds something unreadable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored template body no longer parses (damage).
    #[error("stored template body of {stack_id} (version {seq}) is unreadable")]
    Damaged { stack_id: String, seq: u64 },
}

/// What stack operations return.
pub type StackResult<T> = Result<T, StackError>;

impl StackError {
    /// A single problem with the body at `path`.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        StackError::Invalid(vec![Problem {
            path: path.into(),
            message: message.into(),
        }])
    }
}
