//! Storing versions: the one path by which apply, update, scale, rollback
//! and config changes make a stack's next version, so every one of them is
//! checked, keeps the stack's vendor and secrets, is recorded as an event
//! and reaches the scheduler the same way.

use super::checks;
use super::config_vars;
use super::error::{StackError, StackResult};
use super::tasks;
use super::Stacks;
use crate::clock;
use crate::store::{StackRecord, StackStatus, VersionOutcome, VersionRecord};
use crate::template;
use serde_json::{json, Value};

/// Who acts on a stack: whose pools a new stack runs in, whether an
/// admin acts on their own stack, and who the audit trail names.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub user_id: &'a str,
    pub username: &'a str,
    pub admin: bool,
    /// The API client whose token made the call.
    pub client_id: &'a str,
}

/// What made a new version; each is recorded as its own event.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new stack from a template (`stack.created`).
    Created,
    /// A whole new template body (`stack.updated`).
    Updated,
    /// Instance counts changed (`stack.scaled`), as `(flag, count)`.
    Scaled(Vec<(String, u64)>),
    /// An earlier version's body again (`stack.rolled_back`).
    RolledBack { to_version_id: String },
    /// Environment variables of one configuration set or removed
    /// (`stack.config_changed`): the names only, never the values.
    Config {
        flag: String,
        set: Vec<String>,
        unset: Vec<String>,
    },
}

impl Change {
    /// The operation's name in its task.
    pub fn operation(&self) -> &'static str {
        match self {
            Change::Created => "apply",
            Change::Updated => "update",
            Change::Scaled(_) => "formation",
            Change::RolledBack { .. } => "rollback",
            Change::Config { .. } => "config",
        }
    }

    /// The audit trail's name for this change.
    pub fn action(&self) -> crate::audit::Action {
        use crate::audit::Action;
        match self {
            Change::Created => Action::StackApply,
            Change::Updated => Action::StackUpdate,
            Change::Scaled(_) => Action::StackFormation,
            Change::RolledBack { .. } => Action::StackRollback,
            Change::Config { .. } => Action::StackConfig,
        }
    }

    /// The event type this change is recorded as.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Created => "stack.created",
            Change::Updated => "stack.updated",
            Change::Scaled(_) => "stack.scaled",
            Change::RolledBack { .. } => "stack.rolled_back",
            Change::Config { .. } => "stack.config_changed",
        }
    }

    /// The event's data for the version it made.
    pub fn data(&self, version_id: &str) -> Value {
        match self {
            Change::Created | Change::Updated => json!({ "version_id": version_id }),
            Change::Scaled(counts) => json!({
                "version_id": version_id,
                "formation": counts
                    .iter()
                    .map(|(flag, count)| json!({ "flag": flag, "instance_count": count }))
                    .collect::<Vec<_>>(),
            }),
            Change::RolledBack { to_version_id } => json!({
                "version_id": version_id,
                "body_of_version_id": to_version_id,
            }),
            Change::Config { flag, set, unset } => json!({
                "version_id": version_id,
                "flag": flag,
                "set": set,
                "unset": unset,
            }),
        }
    }
}

/// A version just stored, and the stack as it now is.
#[derive(Debug)]
pub struct Released {
    pub stack: StackRecord,
    pub version_id: String,
    /// The task that settles when the stack has settled on this version.
    pub task_id: String,
}

/// Parses a stored body. Stored bodies were validated JSON, so a failure
/// here means damage.
pub fn stored_body(version: &VersionRecord) -> StackResult<Value> {
    serde_json::from_str(&version.body).map_err(|err| {
        tracing::error!(stack_id = %version.stack_id, seq = version.seq, error = %err, "stored template body unreadable");
        StackError::Damaged {
            stack_id: version.stack_id.clone(),
            seq: version.seq,
        }
    })
}

impl Stacks<'_> {
    /// The latest version of a stack.
    pub fn latest(&self, stack: &StackRecord) -> StackResult<VersionRecord> {
        self.store
            .version_by_seq(&stack.stack_id, stack.latest_seq)?
            .ok_or_else(|| {
                tracing::error!(stack_id = %stack.stack_id, seq = stack.latest_seq, "latest version missing");
                StackError::Damaged {
                    stack_id: stack.stack_id.clone(),
                    seq: stack.latest_seq,
                }
            })
    }

    /// The latest body of a stack.
    pub fn latest_body(&self, stack: &StackRecord) -> StackResult<Value> {
        stored_body(&self.latest(stack)?)
    }

    /// A version by id; empty or `latest` is the newest.
    pub fn find_version(
        &self,
        stack: &StackRecord,
        version_id: Option<&str>,
    ) -> StackResult<VersionRecord> {
        match version_id {
            None | Some("") | Some("latest") => self.latest(stack),
            Some(id) => {
                self.store
                    .version(&stack.stack_id, id)?
                    .ok_or_else(|| StackError::NotFound {
                        kind: "version_id",
                        id: id.to_owned(),
                    })
            }
        }
    }

    /// Creates a stack from a template body: checked, within the actor's
    /// stack quota, version 1 stored with the stack in one transaction.
    pub async fn create(&self, actor: Actor<'_>, body: Value) -> StackResult<Released> {
        let pools = checks::check(
            self.store,
            self.max_container_section,
            actor.username,
            actor.admin,
            &body,
        )?;
        let owned = self
            .store
            .stacks()?
            .iter()
            .filter(|s| s.user_id == actor.user_id && s.stack_status != StackStatus::DeleteComplete)
            .count();
        crate::quotas::admit(crate::quotas::Quota::StacksPerUser, self.quotas, owned)?;
        let now = clock::now_ms();
        let stack_id = flotilla_common::ids::template_id(actor.user_id);
        let version = VersionRecord {
            stack_id: stack_id.clone(),
            seq: 1,
            version_id: flotilla_common::ids::version_id(),
            created_ms: now,
            body: body.to_string(),
            pools,
        };
        let stack = StackRecord {
            stack_id: stack_id.clone(),
            user_id: actor.user_id.to_owned(),
            username: actor.username.to_owned(),
            nickname: crate::nickname::generate(),
            auth_token: flotilla_common::ids::random_alphanumeric(
                crate::auth::secret::STACK_TOKEN_LEN,
            ),
            create_time_ms: now,
            stack_status: StackStatus::CreateInProgress,
            status_reason: None,
            vendor: body.get("vendor").cloned(),
            latest_seq: 1,
            latest_version_id: version.version_id.clone(),
            updated_ms: now,
            stopped: false,
        };
        // The task is stored first, so no pass can settle the version
        // before it has a task to settle.
        let task = tasks::pending(
            Change::Created.operation(),
            &stack_id,
            Some(&version.version_id),
            now,
        );
        self.store.put_task(&task)?;
        if let Err(err) = self.store.create_stack(
            &stack,
            &crate::auth::secret::digest(&stack.auth_token),
            &version,
        ) {
            self.store.remove_task(&task)?;
            return Err(err.into());
        }
        let version_id = version.version_id;
        self.record(
            actor,
            &stack_id,
            &Change::Created,
            &version_id,
            &task.task_id,
            now,
        )
        .await?;
        Ok(Released {
            stack,
            version_id,
            task_id: task.task_id,
        })
    }

    /// Stores a whole new template body as the stack's next version.
    pub async fn update(
        &self,
        stack: &StackRecord,
        actor: Actor<'_>,
        body: Value,
    ) -> StackResult<Released> {
        let previous = self.latest_body(stack)?;
        self.release(stack, actor, &previous, body, Change::Updated)
            .await
    }

    /// Stores `body` as the stack's next version after `previous` (its
    /// latest body) and starts rolling it out. The body is checked for the
    /// stack's owner (whoever acts), keeps the stack's vendor, and keeps
    /// the stored value of every secret variable it gives as `[redacted]`
    /// (what operators read back).
    pub(super) async fn release(
        &self,
        stack: &StackRecord,
        actor: Actor<'_>,
        previous: &Value,
        mut body: Value,
        change: Change,
    ) -> StackResult<Released> {
        if stack.stack_status.is_deleting() {
            return Err(StackError::Deleting {
                stack_id: stack.stack_id.clone(),
                status: stack.stack_status,
            });
        }
        config_vars::keep_redacted(&mut body, previous);
        let owner_admin = actor.admin && actor.user_id == stack.user_id;
        let pools = checks::check(
            self.store,
            self.max_container_section,
            &stack.username,
            owner_admin,
            &body,
        )?;
        template::keep_vendor(&mut body, stack.vendor.as_ref());
        let version_id = flotilla_common::ids::version_id();
        let now = clock::now_ms();
        let task = tasks::pending(change.operation(), &stack.stack_id, Some(&version_id), now);
        self.store.put_task(&task)?;
        let outcome = self.store.add_version(
            &stack.stack_id,
            &version_id,
            now,
            &body.to_string(),
            &pools,
            StackStatus::UpdateInProgress,
        );
        let refused = match outcome {
            Ok(VersionOutcome::Added(stack)) => Ok(*stack),
            Ok(VersionOutcome::NoStack) => Err(StackError::NotFound {
                kind: "template_id",
                id: stack.stack_id.clone(),
            }),
            Ok(VersionOutcome::Deleting(status)) => Err(StackError::Deleting {
                stack_id: stack.stack_id.clone(),
                status,
            }),
            Err(err) => Err(err.into()),
        };
        let stack = match refused {
            Ok(stack) => stack,
            Err(err) => {
                self.store.remove_task(&task)?;
                return Err(err);
            }
        };
        tasks::supersede(
            self.store,
            &stack.stack_id,
            &task.task_id,
            change.operation(),
            Some(&version_id),
            now,
        )?;
        self.record(
            actor,
            &stack.stack_id,
            &change,
            &version_id,
            &task.task_id,
            now,
        )
        .await?;
        Ok(Released {
            stack,
            version_id,
            task_id: task.task_id,
        })
    }

    /// Records the change as an event and in the audit trail, makes both
    /// durable, and wakes the scheduler.
    async fn record(
        &self,
        actor: Actor<'_>,
        stack_id: &str,
        change: &Change,
        version_id: &str,
        task_id: &str,
        now: i64,
    ) -> StackResult<()> {
        let event = crate::events::Event::Version {
            change,
            version_id,
            task_id,
        };
        let data = event.data();
        self.store.record(&event, Some(stack_id), None, now)?;
        let record = crate::audit::Record {
            action: change.action(),
            target: stack_id,
            stack_id: Some(stack_id),
            instance_id: None,
            changes: data,
        };
        crate::audit::append(self.store, actor, record, now)?;
        self.store.flush().await?;
        self.fleet.nudge();
        tracing::info!(stack_id = %stack_id, version_id = %version_id, change = change.kind(), "stack version stored");
        Ok(())
    }

    /// Every configuration of a stack that is not being deleted whose
    /// latest version runs in `pool`, for checks before the pool changes.
    pub fn running_in_pool(&self, pool: &str) -> StackResult<Vec<RunningConfig>> {
        let mut found = Vec::new();
        for stack in self.store.stacks()? {
            if stack.stack_status.is_deleting() {
                continue;
            }
            let version = self.latest(&stack)?;
            let body = stored_body(&version)?;
            for config in template::configurations(&body) {
                let Some(flag) = config.get("flag").and_then(Value::as_str) else {
                    continue;
                };
                if version.pool_of(flag) == pool {
                    found.push(RunningConfig {
                        stack_id: stack.stack_id.clone(),
                        owner: stack.username.clone(),
                        flag: flag.to_owned(),
                        container: config.get("container").cloned().unwrap_or(Value::Null),
                    });
                }
            }
        }
        Ok(found)
    }
}

/// One configuration of a live stack that runs in a pool.
pub struct RunningConfig {
    pub stack_id: String,
    pub owner: String,
    pub flag: String,
    pub container: Value,
}

impl RunningConfig {
    /// What `policy` would forbid in its container section, each as
    /// `pointer: message` (pointers within the section).
    pub fn violations(&self, policy: &flotilla_common::policy::Policy) -> Vec<String> {
        match template::validate::container_spec(&self.container) {
            Some(spec) => flotilla_common::policy::check(&spec, policy)
                .into_iter()
                .map(|v| format!("{}: {}", v.path, v.message))
                .collect(),
            None if self.container.is_null() => Vec::new(),
            None => vec!["the container section does not parse".to_owned()],
        }
    }
}
