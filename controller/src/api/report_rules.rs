//! Which HTTP reports about a VM are taken, and what they may do: pure
//! decisions over what the store says about the instance ([`holder`]
//! reads those facts), so the handlers only carry the verdict out.
//!
//! A stack's token is held by every VM of an alm-agent-style stack, so it
//! speaks for that stack's own VMs only: it may drain an agent pinned to
//! the stack (the alm-agent model, one VM per stack), never a shared one,
//! and its notice gets the server's deadline, not one it names. An agent's
//! own REST token speaks for that agent alone, with the cloud's deadline.

/// Who sent the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reporter {
    /// An admin's access token.
    Admin,
    /// A non-admin operator's access token, for a stack the operator owns.
    Owner,
    /// A stack's `auth_token` (or an access token issued for it).
    Stack,
    /// An enrolled agent's own REST token.
    Agent,
}

/// What the store says about the enrolled agent holding the reported
/// instance id (none when no live agent holds it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holder {
    /// Enrolled with a join token pinned to the reported stack.
    pub pinned_to_stack: bool,
    /// The reported stack is in its current desired state.
    pub placed_now: bool,
    /// The reported stack was ever placed on it.
    pub ran_stack: bool,
}

/// The live enrolled agent holding `instance_id`, and what it has to do
/// with `stack_id`; `None` when no agent (or only a revoked one) holds it.
pub fn holder(
    store: &crate::store::Store,
    stack_id: &str,
    instance_id: &str,
) -> crate::store::StoreResult<Option<(crate::store::AgentRecord, Holder)>> {
    let Some(agent) = store
        .agent_by_instance(instance_id)?
        .filter(|agent| agent.state != crate::store::AgentState::Revoked)
    else {
        return Ok(None);
    };
    let desired = store.desired(&agent.agent_id)?;
    let holder = Holder {
        pinned_to_stack: agent.pin.as_ref().is_some_and(|p| p.stack_id == stack_id),
        placed_now: desired.placements.iter().any(|p| p.stack_id == stack_id),
        ran_stack: desired.history.contains(stack_id),
    };
    Ok(Some((agent, holder)))
}

/// What a spot notice over HTTP does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeVerdict {
    /// Drain the agent; with the notice's own deadline when `honour_time`,
    /// else with the server's (none: the drain waits for replacements).
    Drain { honour_time: bool },
    /// No enrolled agent is concerned: record the event only.
    EventOnly,
    /// The caller may not act on this agent (403, nothing changes).
    Forbidden,
}

/// Decides a spot notice. `holder` is the agent the notice names (for
/// [`Reporter::Agent`], the calling agent itself).
pub fn notice_verdict(reporter: &Reporter, holder: Option<Holder>) -> NoticeVerdict {
    match (reporter, holder) {
        (Reporter::Agent, Some(_)) => NoticeVerdict::Drain { honour_time: true },
        (Reporter::Agent, None) => NoticeVerdict::Forbidden,
        (_, None) => NoticeVerdict::EventOnly,
        (Reporter::Admin, Some(h)) if h.ran_stack => NoticeVerdict::Drain { honour_time: true },
        (Reporter::Admin, Some(_)) => NoticeVerdict::EventOnly,
        (Reporter::Owner | Reporter::Stack, Some(h)) if h.pinned_to_stack => {
            NoticeVerdict::Drain { honour_time: false }
        }
        (Reporter::Owner | Reporter::Stack, Some(_)) => NoticeVerdict::Forbidden,
    }
}

/// Whether `POST /v3/event/container/status` is taken: a stack token only
/// for instances placed for its stack or pinned to it; operators as before.
pub fn status_taken(reporter: &Reporter, holder: Option<Holder>) -> bool {
    match reporter {
        Reporter::Stack | Reporter::Agent => {
            holder.is_some_and(|h| h.placed_now || h.pinned_to_stack)
        }
        Reporter::Admin | Reporter::Owner => true,
    }
}

/// What an original alm-agent report (`/v3/alm/agent/*`) may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlmVerdict {
    /// An enrolled agent holds the id and runs the stack: taken as is.
    Enrolled,
    /// No enrolled agent holds the id: taken if the stack has room for
    /// one more alm-agent id (its instance count).
    Counted,
    /// An enrolled agent holds the id and does not run the stack (404).
    NotFound,
}

/// Decides an alm-agent report.
pub fn alm_verdict(holder: Option<Holder>) -> AlmVerdict {
    match holder {
        None => AlmVerdict::Counted,
        Some(h) if h.placed_now => AlmVerdict::Enrolled,
        Some(_) => AlmVerdict::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARED: Holder = Holder {
        pinned_to_stack: false,
        placed_now: true,
        ran_stack: true,
    };
    const PINNED: Holder = Holder {
        pinned_to_stack: true,
        placed_now: true,
        ran_stack: true,
    };
    const STRANGER: Holder = Holder {
        pinned_to_stack: false,
        placed_now: false,
        ran_stack: false,
    };

    #[test]
    fn notices() {
        use NoticeVerdict::*;
        let table = [
            (Reporter::Stack, Some(SHARED), Forbidden),
            (Reporter::Stack, Some(STRANGER), Forbidden),
            (Reporter::Stack, Some(PINNED), Drain { honour_time: false }),
            (Reporter::Stack, None, EventOnly),
            (Reporter::Owner, Some(SHARED), Forbidden),
            (Reporter::Owner, Some(PINNED), Drain { honour_time: false }),
            (Reporter::Admin, Some(SHARED), Drain { honour_time: true }),
            (Reporter::Admin, Some(STRANGER), EventOnly),
            (Reporter::Admin, None, EventOnly),
            (Reporter::Agent, Some(STRANGER), Drain { honour_time: true }),
            (Reporter::Agent, None, Forbidden),
        ];
        for (reporter, holder, want) in table {
            assert_eq!(
                notice_verdict(&reporter, holder),
                want,
                "{reporter:?} {holder:?}"
            );
        }
    }

    #[test]
    fn statuses() {
        let placed_only = Holder {
            placed_now: true,
            ..STRANGER
        };
        let pinned_only = Holder {
            pinned_to_stack: true,
            ..STRANGER
        };
        let ran_before = Holder {
            ran_stack: true,
            ..STRANGER
        };
        let table = [
            (Reporter::Stack, None, false),
            (Reporter::Stack, Some(STRANGER), false),
            (Reporter::Stack, Some(ran_before), false),
            (Reporter::Stack, Some(placed_only), true),
            (Reporter::Stack, Some(pinned_only), true),
            (Reporter::Owner, None, true),
            (Reporter::Admin, Some(STRANGER), true),
        ];
        for (reporter, holder, want) in table {
            assert_eq!(
                status_taken(&reporter, holder),
                want,
                "{reporter:?} {holder:?}"
            );
        }
    }

    #[test]
    fn alm_reports() {
        let table = [
            (None, AlmVerdict::Counted),
            (Some(SHARED), AlmVerdict::Enrolled),
            (Some(STRANGER), AlmVerdict::NotFound),
            (
                Some(Holder {
                    ran_stack: true,
                    pinned_to_stack: true,
                    placed_now: false,
                }),
                AlmVerdict::NotFound,
            ),
        ];
        for (holder, want) in table {
            assert_eq!(alm_verdict(holder), want, "{holder:?}");
        }
    }
}
