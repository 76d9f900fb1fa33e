//! Quotas: how much of the controller one user or one credential may hold,
//! so no caller can grow the store or the scheduler's work without bound.
//!
//! Two kinds, on purpose:
//! - **Things a user creates** (stacks, webhooks, join tokens) are refused
//!   past the cap (409 `quota_exceeded`, naming the quota): nothing the
//!   user already has changes.
//! - **Access tokens** are never refused: a new token makes the oldest
//!   active ones of the same credential lapse. A VM running the original
//!   alm-agent mints a token with its stack's credentials on every run, so
//!   refusing would stop working VMs; letting the oldest lapse bounds the
//!   store while the newest (the ones in use) keep working. A stack's
//!   tokens count against that stack only, never against another stack or
//!   client.
//!
//! The decisions here are pure; the API and [`crate::auth::tokens`] apply
//! them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The caps, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    /// Active access tokens one API client may hold.
    pub tokens_per_client: usize,
    /// Active tokens a stack's credentials may hold, per instance of the
    /// stack (at least [`MIN_STACK_TOKENS_PER_INSTANCE`]).
    pub stack_tokens_per_instance: usize,
    /// Stacks one user may own (deleted ones do not count).
    pub stacks_per_user: usize,
    /// Webhook subscriptions one user may hold.
    pub hooks_per_user: usize,
    /// Join tokens one user may have that can still enroll an agent.
    pub join_tokens_per_user: usize,
}

/// The floor for [`Quotas::stack_tokens_per_instance`]: every VM of a stack
/// may hold a few tokens at once (one per run of the alm-agent, runs can
/// overlap), so fewer would cut off working VMs.
pub const MIN_STACK_TOKENS_PER_INSTANCE: usize = 4;

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            tokens_per_client: 256,
            stack_tokens_per_instance: 8,
            stacks_per_user: 200,
            hooks_per_user: 100,
            join_tokens_per_user: 200,
        }
    }
}

impl Quotas {
    /// The first setting the controller cannot run with, as (key, reason).
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.stack_tokens_per_instance < MIN_STACK_TOKENS_PER_INSTANCE {
            return Some((
                "stack_tokens_per_instance",
                format!(
                    "{} is below {MIN_STACK_TOKENS_PER_INSTANCE}: every VM of a stack needs room for a few tokens",
                    self.stack_tokens_per_instance
                ),
            ));
        }
        let floors = [
            ("max_tokens_per_client", self.tokens_per_client),
            ("max_stacks_per_user", self.stacks_per_user),
            ("max_hooks_per_user", self.hooks_per_user),
            ("max_join_tokens_per_user", self.join_tokens_per_user),
        ];
        floors
            .into_iter()
            .find(|(_, value)| *value == 0)
            .map(|(key, _)| (key, "must be at least 1".to_owned()))
    }
}

/// A quota a user can run into, named as its configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    StacksPerUser,
    HooksPerUser,
    JoinTokensPerUser,
}

impl Quota {
    /// The configuration key (also the flag, with dashes) that sets it.
    pub fn key(self) -> &'static str {
        match self {
            Quota::StacksPerUser => "max_stacks_per_user",
            Quota::HooksPerUser => "max_hooks_per_user",
            Quota::JoinTokensPerUser => "max_join_tokens_per_user",
        }
    }

    /// What is counted, for messages.
    pub fn noun(self) -> &'static str {
        match self {
            Quota::StacksPerUser => "stacks",
            Quota::HooksPerUser => "webhook subscriptions",
            Quota::JoinTokensPerUser => "active join tokens",
        }
    }

    /// Its cap in `quotas`.
    pub fn limit(self, quotas: &Quotas) -> usize {
        match self {
            Quota::StacksPerUser => quotas.stacks_per_user,
            Quota::HooksPerUser => quotas.hooks_per_user,
            Quota::JoinTokensPerUser => quotas.join_tokens_per_user,
        }
    }

    /// What the user can do about it.
    fn remedy(self) -> &'static str {
        match self {
            Quota::StacksPerUser => "delete a stack first",
            Quota::HooksPerUser => "remove a subscription first",
            Quota::JoinTokensPerUser => "revoke a join token first",
        }
    }
}

/// One more would pass the cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub quota: Quota,
    pub limit: usize,
    pub used: usize,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "quota {} reached: {} of at most {} {} in use; {}",
            self.quota.key(),
            self.used,
            self.limit,
            self.quota.noun(),
            self.quota.remedy()
        )
    }
}

impl std::error::Error for Exceeded {}

/// Whether a user holding `used` of `quota` may create one more.
pub fn admit(quota: Quota, quotas: &Quotas, used: usize) -> Result<(), Exceeded> {
    let limit = quota.limit(quotas);
    if used < limit {
        Ok(())
    } else {
        Err(Exceeded { quota, limit, used })
    }
}

/// The most active tokens a stack's credentials may hold: the configured
/// number per instance (never below the floor) times its instances, and
/// room for one VM even while the stack asks for none.
pub fn stack_token_cap(quotas: &Quotas, instances: usize) -> usize {
    quotas
        .stack_tokens_per_instance
        .max(MIN_STACK_TOKENS_PER_INSTANCE)
        .saturating_mul(instances.max(1))
}

/// How many of the oldest active tokens lapse when one more is issued to a
/// credential that holds `active` under cap `cap` (the new one included in
/// the cap, so `cap` stay active afterwards).
pub fn tokens_to_lapse(active: usize, cap: usize) -> usize {
    (active + 1).saturating_sub(cap.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admit_refuses_at_the_cap() {
        let quotas = Quotas {
            stacks_per_user: 2,
            hooks_per_user: 0,
            ..Quotas::default()
        };
        let cases = [
            (Quota::StacksPerUser, 0, true),
            (Quota::StacksPerUser, 1, true),
            (Quota::StacksPerUser, 2, false),
            (Quota::StacksPerUser, 9, false),
            (Quota::HooksPerUser, 0, false),
        ];
        for (quota, used, ok) in cases {
            assert_eq!(admit(quota, &quotas, used).is_ok(), ok, "{quota:?} {used}");
        }
    }

    #[test]
    fn the_refusal_names_the_quota_and_the_limit() {
        let quotas = Quotas {
            join_tokens_per_user: 3,
            ..Quotas::default()
        };
        let Err(err) = admit(Quota::JoinTokensPerUser, &quotas, 3) else {
            panic!("admitted past the cap");
        };
        let text = err.to_string();
        assert!(text.contains("max_join_tokens_per_user"), "{text}");
        assert!(text.contains("at most 3"), "{text}");
    }

    #[test]
    fn stack_cap_is_per_instance_with_a_floor() {
        let cases = [
            // (per instance configured, instances, cap)
            (8, 3, 24),
            (8, 0, 8),
            (1, 5, 20), // the floor of four per instance holds
            (4, 1, 4),
            (usize::MAX, 2, usize::MAX),
        ];
        for (per, instances, cap) in cases {
            let quotas = Quotas {
                stack_tokens_per_instance: per,
                ..Quotas::default()
            };
            assert_eq!(
                stack_token_cap(&quotas, instances),
                cap,
                "{per} x {instances}"
            );
        }
    }

    #[test]
    fn oldest_tokens_lapse_to_keep_the_cap() {
        let cases = [
            // (active, cap, lapse)
            (0, 5, 0),
            (4, 5, 0),
            (5, 5, 1),
            (9, 5, 5),
            (0, 0, 0),
            (3, 0, 3),
        ];
        for (active, cap, lapse) in cases {
            assert_eq!(tokens_to_lapse(active, cap), lapse, "{active} {cap}");
        }
    }
}
