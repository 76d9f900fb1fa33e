//! One supervisor task per placed configuration (a "slot": stack + flag).
//! It owns that slot's container from pull to removal: creates and starts
//! it, probes it, applies the restart policy when it dies, replaces it on
//! update (rolling back when the new one fails), and stops it (SIGTERM,
//! grace period, SIGKILL) when the slot is no longer wanted. Slots run
//! independently, so a slow pull never holds up another container.
//!
//! The loop is level-triggered: after every step and every wake-up (a new
//! desired state, an engine event, a timer) it looks at the container and
//! asks [`decide::decide`] what to do next. Engine events only wake it; it
//! inspects the container itself, so a lost or repeated event is harmless.

pub mod decide;
#[cfg(test)]
mod executor_tests;

use super::effects::Engine;
use super::engine::{self, Inspected};
use super::{git, names, pre_stop, probe, Context};
use crate::runtime::spec::{ContainerSpec, Restart, Volume, VolumeSource};
use crate::state::{ContainerRecord, Transition};
use crate::traffic::Route;
use backoff::backoff::Backoff;
use decide::{decide, restart_delay, Crashes, Failure, Memory, Observed, Step, Want};
use flotilla_common::redact::strip_url_credentials;
use flotilla_common::status::ContainerStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// What the slot should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub stack_id: String,
    pub flag: String,
    pub version_id: String,
    pub spec_json: String,
    pub generation: u64,
    pub hash: String,
    /// The pool it runs in, and that pool's policy, checked again before
    /// every create.
    pub pool: String,
    pub policy: flotilla_common::policy::Policy,
    /// Named volumes are the stack's own (`false`: a stack from before
    /// volumes were scoped keeps their bare names).
    pub scoped_volumes: bool,
    /// The stack is stopped by its operator: no container of it runs.
    pub held: bool,
}

/// Whether `spec` may run under the pool's policy `wanted` carries; the
/// reason (every violation, with its pointer) when not.
pub fn policy_gate(spec: &ContainerSpec, wanted: &Wanted) -> Result<(), String> {
    let violations = flotilla_common::policy::check(spec, &wanted.policy);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "pool {} forbids this {}",
            wanted.pool,
            flotilla_common::spec::sentence(&violations)
        ))
    }
}

/// The slot's running container.
struct Live {
    id: String,
    name: String,
    version_id: String,
    hash: String,
    spec: ContainerSpec,
    ip: Option<String>,
    /// When the container was (re)started by this agent.
    started: Instant,
    /// Consecutive failed probes.
    probe_failures: u32,
    /// The git commit mounted, for code deploys.
    commit: Option<String>,
}

struct Slot<E: Engine> {
    ctx: Arc<Context<E>>,
    stack_id: String,
    flag: String,
    live: Option<Live>,
    /// The container is stopped for a hold (this one, or the stack's).
    down: bool,
    /// What [`decide`] reads besides the container and the desired state.
    memory: Memory,
    crashes: Crashes,
    /// Delays between tries of a start that keeps failing.
    start_backoff: backoff::ExponentialBackoff,
    /// The last git poll failure reported (each distinct one once).
    last_poll_error: Option<String>,
}

/// Delays between tries of a failed start: 1 s doubling (with jitter) to 5
/// minutes, for as long as the version stays wanted.
fn start_backoff() -> backoff::ExponentialBackoff {
    backoff::ExponentialBackoff {
        current_interval: Duration::from_secs(1),
        initial_interval: Duration::from_secs(1),
        multiplier: 2.0,
        randomization_factor: 0.2,
        max_interval: Duration::from_secs(300),
        max_elapsed_time: None,
        ..Default::default()
    }
}

impl<E: Engine> Slot<E> {
    async fn report(
        &self,
        version_id: &str,
        status: ContainerStatus,
        exit_code: Option<i64>,
        reason: Option<String>,
    ) {
        // Reasons reach events and webhooks: never a URL's credentials.
        let reason = reason.map(|r| strip_url_credentials(&r).into_owned());
        tracing::info!(stack_id = %self.stack_id, flag = %self.flag, version_id, status = %status, exit_code, reason = reason.as_deref().unwrap_or(""), "container status");
        let transition = Transition {
            stack_id: self.stack_id.clone(),
            flag: self.flag.clone(),
            version_id: version_id.to_owned(),
            status,
            exit_code,
            reason,
            time_ms: flotilla_common::time::now_ms(),
            commit: self.live.as_ref().and_then(|l| l.commit.clone()),
        };
        let _ = self.ctx.reports.send(transition).await;
    }

    /// Pulls (per policy), records, creates and starts a container for
    /// `wanted`; waits until it is healthy. Reports failures itself.
    /// `holds`: the ports the slot's current container has (an update's).
    async fn launch(
        &mut self,
        wanted: &Wanted,
        spec: &ContainerSpec,
        settle: bool,
        holds: &[crate::runtime::spec::Port],
    ) -> Result<Live, (ContainerStatus, String)> {
        let ctx = Arc::clone(&self.ctx);
        let docker = &ctx.engine;
        // Its host ports must be free (of other stacks and of the host's
        // own listeners), or the routes would take them from their owner.
        self.ctx
            .traffic
            .check_free(&wanted.stack_id, &wanted.flag, spec, holds)
            .await
            .map_err(|err| (ContainerStatus::StartFailure, err))?;
        let image_lock = self.ctx.image_locks.lock(&spec.image).await;
        let prepared = docker
            .prepare_image(&self.ctx.store, &wanted.stack_id, spec)
            .await;
        drop(image_lock);
        if !matches!(prepared, Ok(super::images::ImageStep::Use)) {
            self.ctx.metrics.pulled(prepared.is_ok());
        }
        prepared.map_err(|err| (ContainerStatus::StartFailure, err))?;
        // A code deploy: the commit's release, complete before it is mounted.
        let mut spec = spec.clone();
        let mut commit = None;
        let mut suffix = wanted.hash.clone();
        if let Some(git) = spec.git.clone() {
            let root = &self.ctx.code_root;
            let resolved = git::resolve(root, &wanted.stack_id, &git)
                .await
                .map_err(|err| (ContainerStatus::StartFailure, err))?;
            let slot_dir = root.join("releases").join(names::container_name(
                &self.ctx.agent_id,
                &wanted.stack_id,
                &wanted.flag,
                "",
            ));
            let release = git::export(root, &wanted.stack_id, &slot_dir, &git, &resolved)
                .await
                .map_err(|err| (ContainerStatus::StartFailure, err))?;
            let code_dir = match spec.code_dir.clone() {
                Some(dir) => dir,
                None => docker
                    .image_label(&spec.image, "com.mobingi.code_dir")
                    .await
                    .unwrap_or_else(|| "/var/www/html".to_owned()),
            };
            spec.volumes.push(Volume {
                source: VolumeSource::HostPath(release.path.to_string_lossy().into_owned()),
                target: code_dir,
                read_only: true,
            });
            suffix = format!("{}-{}", wanted.hash, &resolved[..resolved.len().min(10)]);
            commit = Some(resolved);
        }
        let spec = &spec;
        let name =
            names::container_name(&self.ctx.agent_id, &wanted.stack_id, &wanted.flag, &suffix);
        let mut record = ContainerRecord {
            name: name.clone(),
            stack_id: wanted.stack_id.clone(),
            flag: wanted.flag.clone(),
            version_id: wanted.version_id.clone(),
            spec_hash: wanted.hash.clone(),
            container_id: None,
        };
        self.ctx
            .store
            .put_container(&record)
            .await
            .map_err(|err| (ContainerStatus::StartFailure, err.to_string()))?;
        let mut labels = names::labels(
            &self.ctx.agent_id,
            &wanted.stack_id,
            &wanted.flag,
            &wanted.version_id,
            wanted.generation,
            &wanted.hash,
        );
        if let Some(commit) = &commit {
            labels.insert(names::COMMIT.to_owned(), commit.clone());
        }
        labels.extend(spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        // The stack's own network, so other stacks' containers cannot reach it.
        let network_guard = self.ctx.network_lock.lock().await;
        let network = docker
            .ensure_network(
                &names::network_name(&self.ctx.agent_id, &wanted.stack_id),
                names::network_labels(&self.ctx.agent_id, &wanted.stack_id),
            )
            .await
            .map_err(|err| (ContainerStatus::StartFailure, err))?;
        drop(network_guard);
        let mounted = docker
            .stack_volumes(&wanted.stack_id)
            .await
            .map_err(|err| (ContainerStatus::StartFailure, err))?;
        let volumes = names::VolumeNames::new(&wanted.stack_id, mounted.iter().map(String::as_str))
            .scoped(wanted.scoped_volumes);
        let body = engine::create_body(spec, &volumes, labels, &network, |port| {
            self.ctx.traffic.routes_port(port)
        });
        let id = match docker
            .create(&name, body)
            .await
            .map_err(|err| (ContainerStatus::StartFailure, err))?
        {
            Some(id) => id,
            // Created before a crash: the deterministic name finds it.
            None => docker
                .inspect(&name)
                .await
                .map_err(|err| (ContainerStatus::StartFailure, err))?
                .map(|c| c.id)
                .ok_or((
                    ContainerStatus::StartFailure,
                    format!("container {name} vanished"),
                ))?,
        };
        record.container_id = Some(id.clone());
        let _ = self.ctx.store.note_container(&record);
        if let Err(err) = docker.start(&id).await {
            let _ = docker.remove(&id).await;
            let _ = self.ctx.store.remove_container(&name);
            return Err((ContainerStatus::StartFailure, err));
        }
        let mut live = Live {
            id: id.clone(),
            name: name.clone(),
            version_id: wanted.version_id.clone(),
            hash: wanted.hash.clone(),
            spec: spec.clone(),
            ip: None,
            started: Instant::now(),
            probe_failures: 0,
            commit,
        };
        if let Err(failure) = self.wait_healthy(&mut live, settle).await {
            let _ = docker.remove(&id).await;
            let _ = self.ctx.store.remove_container(&name);
            return Err(failure);
        }
        Ok(live)
    }

    /// Waits until a freshly started container is healthy: its probe passes
    /// (failures inside the start period do not count). Without a probe it
    /// is healthy once started, unless `settle` asks to see it still
    /// running a moment later (updates, which must decide on a rollback;
    /// a first start learns of a quick death from the event stream).
    async fn wait_healthy(
        &self,
        live: &mut Live,
        settle: bool,
    ) -> Result<(), (ContainerStatus, String)> {
        let ctx = Arc::clone(&self.ctx);
        let docker = &ctx.engine;
        let Some(health) = live.spec.health.clone() else {
            if !settle {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            return match docker.inspect(&live.id).await {
                Ok(Some(c)) if c.running => {
                    live.ip = c.ip;
                    Ok(())
                }
                Ok(Some(c)) => Err((ContainerStatus::StartFailure, exit_reason(&c))),
                Ok(None) => Err((
                    ContainerStatus::StartFailure,
                    "the container disappeared".into(),
                )),
                Err(err) => Err((ContainerStatus::StartFailure, err)),
            };
        };
        let mut failures = 0;
        loop {
            let info = docker
                .inspect(&live.id)
                .await
                .map_err(|err| (ContainerStatus::StartFailure, err))?
                .ok_or((
                    ContainerStatus::StartFailure,
                    "the container disappeared".to_owned(),
                ))?;
            if !info.running {
                return Err((ContainerStatus::StartFailure, exit_reason(&info)));
            }
            live.ip = info.ip.clone();
            match probe::check(
                docker,
                &health.probe,
                &live.id,
                live.ip.as_deref(),
                health.timeout,
            )
            .await
            {
                Ok(()) => return Ok(()),
                Err(err) => {
                    if live.started.elapsed() >= health.start_period {
                        failures += 1;
                    }
                    if failures >= health.retries {
                        return Err((ContainerStatus::ProbeFailure, err));
                    }
                }
            }
            tokio::time::sleep(health.interval).await;
        }
    }

    /// The routes that send the slot's host ports to `live` at its current
    /// address (none when it publishes nothing the agent routes).
    async fn routes_to(&self, live: &Live) -> Result<Vec<Route>, String> {
        if !live
            .spec
            .ports
            .iter()
            .any(|p| self.ctx.traffic.routes_port(p))
        {
            return Ok(Vec::new());
        }
        let inspected = self
            .ctx
            .engine
            .inspect(&live.id)
            .await?
            .ok_or("the container disappeared")?;
        let ip = inspected
            .ip
            .as_deref()
            .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
            .ok_or("the container has no IPv4 address on its network")?;
        Ok(self.ctx.traffic.routes_for(&live.spec, ip))
    }

    /// Points the slot's host ports at `live`, now serving; why not, if
    /// that failed (for the status reason).
    async fn serve(&self, live: &Live) -> Option<String> {
        let routed = match self.routes_to(live).await {
            Ok(routes) => {
                self.ctx
                    .traffic
                    .route(&self.stack_id, &self.flag, routes)
                    .await
            }
            Err(err) => Err(err),
        };
        routed.err().map(|err| {
            tracing::error!(container = %live.name, error = %err, "cannot route the host ports");
            format!("host ports not routed: {err}")
        })
    }

    /// Takes the slot's host ports away from its container (before it stops
    /// for good or for a hold).
    async fn unserve(&self) {
        if let Err(err) = self
            .ctx
            .traffic
            .route(&self.stack_id, &self.flag, Vec::new())
            .await
        {
            tracing::error!(stack_id = %self.stack_id, flag = %self.flag, error = %err, "cannot remove the host port routes");
        }
    }

    /// Stops a container the way every stop of the agent's goes: its
    /// pre-stop hook first (when it has one and the container runs), then
    /// SIGTERM, the grace period, SIGKILL; a spot deadline shortens both.
    /// The hook's outcome, for the status reason.
    async fn stop_gracefully(&self, live: &Live) -> Option<String> {
        let ctx = Arc::clone(&self.ctx);
        let docker = &ctx.engine;
        let mut outcome = None;
        if let Some(hook) = &live.spec.pre_stop {
            match docker.inspect(&live.id).await {
                Ok(Some(c)) if c.running => {
                    let ip = c.ip.or_else(|| live.ip.clone());
                    let limit = self.ctx.grace(hook.timeout);
                    let reason = pre_stop::run(docker, hook, &live.id, ip.as_deref(), limit)
                        .await
                        .reason();
                    tracing::info!(container = %live.name, outcome = %reason, "pre-stop hook ran");
                    outcome = Some(reason);
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(container = %live.name, error = %err, "cannot inspect before the pre-stop hook");
                }
            }
        }
        if let Err(err) = docker
            .stop(&live.id, self.ctx.grace(live.spec.stop_grace))
            .await
        {
            tracing::warn!(container = %live.name, error = %err, "stop failed");
        }
        outcome
    }

    /// Stops and removes a container, reporting `stopping` and `terminated`
    /// (with the pre-stop hook's outcome); the hook's outcome.
    async fn retire(&mut self, live: Live, report: bool) -> Option<String> {
        if report {
            self.report(&live.version_id, ContainerStatus::Stopping, None, None)
                .await;
        }
        let ctx = Arc::clone(&self.ctx);
        let docker = &ctx.engine;
        let outcome = self.stop_gracefully(&live).await;
        let exit = docker
            .inspect(&live.id)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.exit_code);
        if let Err(err) = docker.remove(&live.id).await {
            tracing::warn!(container = %live.name, error = %err, "remove failed");
        }
        let _ = self.ctx.store.remove_container(&live.name);
        if report {
            self.report(
                &live.version_id,
                ContainerStatus::Terminated,
                exit,
                outcome.clone(),
            )
            .await;
        }
        outcome
    }

    /// The spec of `wanted` if it can run here at all: it parses and the
    /// pool's policy allows it. Otherwise `None` after reporting why (and
    /// that `kept`, the running version, stays); such a spec is not tried
    /// again until it changes.
    async fn parse_or_fail(
        &mut self,
        wanted: &Wanted,
        kept: Option<&str>,
    ) -> Option<ContainerSpec> {
        // The pool's policy again, on the VM: nothing the controller let
        // through by mistake reaches the engine.
        let checked = ContainerSpec::parse(&wanted.spec_json)
            .and_then(|spec| policy_gate(&spec, wanted).map(|()| spec));
        match checked {
            Ok(spec) => Some(spec),
            Err(err) => {
                self.memory.failure = Some(Failure {
                    hash: wanted.hash.clone(),
                    retry_at: None,
                });
                let reason = match kept {
                    Some(version) => format!("{err}; version {version} kept"),
                    None => err,
                };
                self.report(
                    &wanted.version_id,
                    ContainerStatus::StartFailure,
                    None,
                    Some(reason),
                )
                .await;
                None
            }
        }
    }

    /// First start of a slot.
    async fn start_new(&mut self, wanted: &Wanted) {
        self.report(&wanted.version_id, ContainerStatus::Starting, None, None)
            .await;
        let Some(spec) = self.parse_or_fail(wanted, None).await else {
            return;
        };
        match self.launch(wanted, &spec, false, &[]).await {
            Ok(live) => {
                self.reset_crashes();
                self.memory.failure = None;
                self.start_backoff.reset();
                let problem = self.serve(&live).await;
                self.live = Some(live);
                self.report(&wanted.version_id, ContainerStatus::Running, None, problem)
                    .await;
            }
            Err((status, reason)) => {
                // Whatever failed here (a pull, the engine, the first health
                // check) may pass later: tried again with backoff.
                let delay = self
                    .start_backoff
                    .next_backoff()
                    .unwrap_or(Duration::from_secs(300));
                self.memory.failure = Some(Failure {
                    hash: wanted.hash.clone(),
                    retry_at: Some(Instant::now() + delay),
                });
                let reason = format!("{reason}; retry in {} s", delay.as_secs().max(1));
                self.report(&wanted.version_id, status, None, Some(reason))
                    .await;
            }
        }
    }

    /// Replaces the running container with one for `wanted`; puts the old
    /// one back if the new one fails. The failure of a new version is not
    /// tried again (the old one serves on until the next version); the
    /// failure of a `redeploy` of the same version with a new commit is
    /// left to the next poll.
    async fn update(&mut self, wanted: &Wanted, old: Live, redeploy: bool) {
        self.report(&wanted.version_id, ContainerStatus::Updating, None, None)
            .await;
        let Some(spec) = self.parse_or_fail(wanted, Some(&old.version_id)).await else {
            self.live = Some(old);
            return;
        };
        // A host port Docker publishes cannot be bound twice: stop the old
        // one first then. Ports the agent routes move once the new one is
        // healthy.
        let docker_publishes = |p: &crate::runtime::spec::Port| {
            p.host_port.is_some() && !self.ctx.traffic.routes_port(p)
        };
        let clash = spec.ports.iter().any(|p| {
            docker_publishes(p)
                && old
                    .spec
                    .ports
                    .iter()
                    .any(|o| o.host_port == p.host_port && o.protocol == p.protocol)
        });
        let old_routes = self.routes_to(&old).await.unwrap_or_default();
        let mut pre_stop = None;
        if clash {
            pre_stop = self.stop_gracefully(&old).await;
        }
        match self.launch(wanted, &spec, true, &old.spec.ports).await {
            Ok(live) => {
                // New connections go to the new container; the old one's
                // drain (until they close, at most its stop grace), then it
                // stops.
                let problem = self.serve(&live).await;
                if problem.is_none() && !old_routes.is_empty() {
                    let grace = self.ctx.grace(old.spec.stop_grace);
                    let open = self.ctx.traffic.drain(&old_routes, grace).await;
                    if open > 0 {
                        tracing::info!(container = %old.name, open, "connections still open after the stop grace; stopping anyway");
                    }
                }
                let retired = self.retire(old, false).await;
                let version = wanted.version_id.clone();
                let outcome = pre_stop
                    .or(retired)
                    .map(|outcome| format!("the version before: {outcome}"));
                let reason = match (problem, outcome) {
                    (Some(problem), Some(outcome)) => Some(format!("{problem}; {outcome}")),
                    (problem, outcome) => problem.or(outcome),
                };
                self.reset_crashes();
                self.live = Some(live);
                self.report(&version, ContainerStatus::Running, None, reason)
                    .await;
            }
            Err((status, reason)) => {
                if !redeploy {
                    self.memory.failure = Some(Failure {
                        hash: wanted.hash.clone(),
                        retry_at: None,
                    });
                }
                if clash {
                    if let Err(err) = self.ctx.engine.start(&old.id).await {
                        tracing::error!(container = %old.name, error = %err, "rollback start failed");
                    }
                }
                let reason = format!("{reason}; rolled back to version {}", old.version_id);
                self.report(&wanted.version_id, status, None, Some(reason))
                    .await;
                self.live = Some(old);
            }
        }
    }

    fn reset_crashes(&mut self) {
        self.crashes = Crashes::default();
        self.memory.restart_at = None;
        self.memory.gave_up = None;
    }

    /// The running container died (or failed its probe): restart per policy
    /// with backoff, or give up.
    async fn died(&mut self, exit_code: Option<i64>, reason: String, probe_failed: bool) {
        let Some(live) = self.live.as_ref() else {
            return;
        };
        let version = live.version_id.clone();
        let hash = live.hash.clone();
        let policy = live.spec.restart;
        let now = Instant::now();
        let failure = probe_failed || exit_code != Some(0);
        let restart = restart_delay(policy, &mut self.crashes, failure, now);
        if probe_failed {
            self.report(
                &version,
                ContainerStatus::ProbeFailure,
                exit_code,
                Some(reason.clone()),
            )
            .await;
        }
        if let Some(delay) = restart {
            self.crashes.recent.push_back(now);
            self.crashes.total += 1;
            self.memory.restart_at = Some(now + delay);
            self.report(
                &version,
                ContainerStatus::Restarting,
                exit_code,
                Some(format!("{reason}; restart in {} s", delay.as_secs())),
            )
            .await;
            return;
        }
        self.memory.gave_up = Some(hash);
        self.memory.restart_at = None;
        if probe_failed {
            return;
        }
        let status = if failure {
            ContainerStatus::AppCrashed
        } else {
            ContainerStatus::Terminated
        };
        let reason = if failure && policy != Restart::Never {
            format!("{reason}; gave up after {} restarts", self.crashes.total)
        } else {
            reason
        };
        self.report(&version, status, exit_code, Some(reason)).await;
    }

    /// Checks the deployed reference for a new commit and redeploys when
    /// there is one. A failed fetch keeps the running release.
    async fn poll_git(&mut self, wanted: &Wanted) {
        let Some(git) = self.live.as_ref().and_then(|l| l.spec.git.clone()) else {
            return;
        };
        match git::resolve(&self.ctx.code_root, &self.stack_id, &git).await {
            Ok(commit) if self.live.as_ref().and_then(|l| l.commit.as_ref()) != Some(&commit) => {
                tracing::info!(stack_id = %self.stack_id, flag = %self.flag, commit = %commit, "new commit; redeploying");
                if let Some(old) = self.live.take() {
                    self.update(wanted, old, true).await;
                }
            }
            Ok(_) => self.last_poll_error = None,
            Err(err) => {
                tracing::warn!(stack_id = %self.stack_id, flag = %self.flag, error = %err, "git poll failed; the running release stays");
                // Each distinct failure is reported once, with the release
                // that keeps serving.
                if self.last_poll_error.as_ref() != Some(&err) {
                    let version = self
                        .live
                        .as_ref()
                        .map(|l| l.version_id.clone())
                        .unwrap_or_default();
                    let commit = self
                        .live
                        .as_ref()
                        .and_then(|l| l.commit.clone())
                        .unwrap_or_default();
                    let reason = format!("{err}; still serving {commit}");
                    self.report(&version, ContainerStatus::Running, None, Some(reason))
                        .await;
                    self.last_poll_error = Some(err);
                }
            }
        }
    }

    /// An operator's restart, stop or start of this instance. A stop is a
    /// hold, on disk before anything is stopped, so it outlives the agent;
    /// the loop then stops the container ([`Slot::stop_for_hold`]). A start
    /// or restart releases it. While the whole stack is stopped, only a
    /// start of the stack runs it again.
    async fn operate(&mut self, action: flotilla_common::wire::messages::Action, stack_held: bool) {
        use flotilla_common::wire::messages::Action;
        match action {
            Action::Stop => {
                if let Err(err) = self
                    .ctx
                    .store
                    .hold(&self.stack_id, &self.flag, flotilla_common::time::now_ms())
                    .await
                {
                    tracing::error!(stack_id = %self.stack_id, flag = %self.flag, error = %err, "cannot record the operator's stop; stopping anyway");
                }
                self.memory.held = true;
            }
            Action::Start | Action::Restart if stack_held => {
                tracing::info!(stack_id = %self.stack_id, flag = %self.flag, ?action, "the stack is stopped; start the stack to run it");
            }
            Action::Start | Action::Restart => {
                if let Err(err) = self
                    .ctx
                    .store
                    .release_hold(&self.stack_id, &self.flag)
                    .await
                {
                    tracing::error!(stack_id = %self.stack_id, flag = %self.flag, error = %err, "cannot release the hold");
                }
                self.memory.held = false;
                if action == Action::Restart && !self.down {
                    self.operator_restart().await;
                }
                // A start of a stopped container: the loop resumes it.
            }
        }
    }

    /// Restarts the running container in place, reporting `restarting`
    /// then `running` once it is healthy.
    async fn operator_restart(&mut self) {
        let Some(live) = self.live.take() else {
            tracing::info!(stack_id = %self.stack_id, flag = %self.flag, "no container to restart");
            return;
        };
        let version = live.version_id.clone();
        self.report(
            &version,
            ContainerStatus::Restarting,
            None,
            Some("operator restart".into()),
        )
        .await;
        let outcome = self.stop_gracefully(&live).await;
        self.start_healthy(live, outcome).await;
    }

    /// Starts the slot's stopped container, waits until it is healthy and
    /// reports `running`, or what went wrong (a fresh crash count: an
    /// operator asked for this start).
    async fn start_healthy(&mut self, live: Live, reason: Option<String>) {
        self.reset_crashes();
        self.start_and_serve(live, reason).await;
    }

    /// Starts the container, waits until it is healthy, points the host
    /// ports at it and reports `running` (with `reason`, unless routing
    /// failed); a failure goes to the restart policy.
    async fn start_and_serve(&mut self, mut live: Live, reason: Option<String>) {
        let ctx = Arc::clone(&self.ctx);
        let version = live.version_id.clone();
        live.started = Instant::now();
        live.probe_failures = 0;
        let result = match ctx.engine.start(&live.id).await {
            Ok(()) => self.wait_healthy(&mut live, false).await,
            Err(err) => Err((ContainerStatus::StartFailure, err)),
        };
        match result {
            Ok(()) => {
                let reason = self.serve(&live).await.or(reason);
                self.live = Some(live);
                self.report(&version, ContainerStatus::Running, None, reason)
                    .await
            }
            Err((status, reason)) => {
                self.live = Some(live);
                self.died(None, reason, status == ContainerStatus::ProbeFailure)
                    .await
            }
        }
    }

    /// Why the slot is held, for its reports.
    fn hold_reason(&self) -> &'static str {
        if self.memory.held {
            "stopped by an operator"
        } else {
            "the stack is stopped"
        }
    }

    /// Reports `stopped` for `version_id` unless that was the last report.
    async fn report_stopped(
        &mut self,
        version_id: &str,
        exit_code: Option<i64>,
        pre_stop: Option<String>,
    ) {
        if self.memory.reported_stopped.as_deref() == Some(version_id) {
            return;
        }
        let reason = Some(match pre_stop {
            Some(outcome) => format!("{}; {outcome}", self.hold_reason()),
            None => self.hold_reason().to_owned(),
        });
        self.report(version_id, ContainerStatus::Stopped, exit_code, reason)
            .await;
        self.memory.reported_stopped = Some(version_id.to_owned());
    }

    /// Stops the container for a hold and keeps it (logs, a quick start).
    async fn stop_for_hold(&mut self) {
        let Some(live) = self.live.take() else { return };
        let ctx = Arc::clone(&self.ctx);
        let docker = &ctx.engine;
        let reason = Some(self.hold_reason().to_owned());
        self.report(&live.version_id, ContainerStatus::Stopping, None, reason)
            .await;
        self.down = true;
        self.memory.restart_at = None;
        self.unserve().await;
        let outcome = self.stop_gracefully(&live).await;
        let exit = docker
            .inspect(&live.id)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.exit_code);
        let version = live.version_id.clone();
        self.live = Some(live);
        self.report_stopped(&version, exit, outcome).await;
    }

    /// Starts the held container again once its hold is gone.
    async fn resume(&mut self) {
        let Some(live) = self.live.take() else {
            return;
        };
        let version = live.version_id.clone();
        self.report(
            &version,
            ContainerStatus::Starting,
            None,
            Some("started by an operator".into()),
        )
        .await;
        self.down = false;
        self.memory.reported_stopped = None;
        self.start_healthy(live, None).await;
    }

    /// Carries out a due restart (the crash count goes on).
    async fn restart(&mut self) {
        self.memory.restart_at = None;
        let Some(live) = self.live.take() else {
            return;
        };
        let _ = self.ctx.engine.stop(&live.id, Duration::from_secs(1)).await;
        self.start_and_serve(live, None).await;
    }

    /// Looks at the slot's container after an engine event: gone (removed
    /// behind the agent's back) or dead (for the restart policy). A stop of
    /// the agent's own has ended by the time this runs (steps run one at a
    /// time), so its container is running again, held or gone.
    async fn observe(&mut self) {
        let Some(live) = self.live.as_ref() else {
            return;
        };
        match self.ctx.engine.inspect(&live.id).await {
            Ok(None) => {
                if let Some(live) = self.live.take() {
                    let _ = self.ctx.store.remove_container(&live.name);
                    self.report(
                        &live.version_id,
                        ContainerStatus::Terminated,
                        None,
                        Some("removed outside the agent".into()),
                    )
                    .await;
                }
            }
            Ok(Some(c)) => {
                let watched = !self.down
                    && self.memory.restart_at.is_none()
                    && self.memory.gave_up.as_ref() != Some(&live.hash);
                if watched && !c.running {
                    self.died(c.exit_code, exit_reason(&c), false).await;
                }
            }
            Err(err) => {
                tracing::warn!(stack_id = %self.stack_id, flag = %self.flag, error = %err, "cannot inspect the container after an engine event");
            }
        }
    }

    /// Runs the steady-state probe; after `retries` consecutive failures the
    /// container is treated as dead.
    async fn probe_tick(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let Some(health) = live.spec.health.clone() else {
            return;
        };
        match probe::check(
            &self.ctx.engine,
            &health.probe,
            &live.id,
            live.ip.as_deref(),
            health.timeout,
        )
        .await
        {
            Ok(()) => live.probe_failures = 0,
            Err(err) => {
                live.probe_failures += 1;
                tracing::warn!(container = %live.name, failures = live.probe_failures, error = %err, "probe failed");
                if live.probe_failures >= health.retries {
                    live.probe_failures = 0;
                    self.died(None, err, true).await;
                }
            }
        }
    }
}

fn exit_reason(c: &Inspected) -> String {
    if c.oom_killed {
        "OOMKilled".into()
    } else {
        format!("exited with code {}", c.exit_code.unwrap_or(-1))
    }
}

/// Adopts the containers found for this slot at start: keeps the one that
/// matches what is wanted (running or not), removes the rest.
async fn adopt<E: Engine>(slot: &mut Slot<E>, wanted: Option<&Wanted>, found: Vec<Inspected>) {
    let ctx = Arc::clone(&slot.ctx);
    let docker = &ctx.engine;
    for container in found {
        let hash = container
            .labels
            .get(names::SPEC_HASH)
            .cloned()
            .unwrap_or_default();
        let spec = wanted.and_then(|w| ContainerSpec::parse(&w.spec_json).ok());
        // A container must have the Docker bindings the agent would give it
        // now (made while the agent routed its ports, it has none, and
        // with `--published-ports docker` it would serve nothing): else it
        // is made again. One Docker published, while the agent routes,
        // serves on until its next update.
        let lacks_bindings = spec.as_ref().is_some_and(|spec| {
            spec.ports
                .iter()
                .filter(|p| !slot.ctx.traffic.routes_port(p))
                .filter_map(|p| p.host_port)
                .any(|port| !container.bound_ports.contains(&port))
        });
        let keep = slot.live.is_none() && wanted.is_some_and(|w| w.hash == hash) && !lacks_bindings;
        match (keep, spec) {
            (true, Some(spec)) => {
                let version = container
                    .labels
                    .get(names::VERSION)
                    .cloned()
                    .unwrap_or_default();
                let name = wanted
                    .map(|w| {
                        names::container_name(&slot.ctx.agent_id, &w.stack_id, &w.flag, &w.hash)
                    })
                    .unwrap_or_default();
                tracing::info!(container = %name, running = container.running, "adopted");
                let running = container.running;
                let held = slot.memory.held || wanted.is_some_and(|w| w.held);
                slot.live = Some(Live {
                    id: container.id.clone(),
                    name,
                    version_id: version,
                    hash,
                    spec,
                    ip: container.ip.clone(),
                    started: Instant::now(),
                    probe_failures: 0,
                    commit: container.labels.get(names::COMMIT).cloned(),
                });
                if running {
                    // Routes as the agent left them (the table outlived
                    // it), or to the container's address now.
                    if let Some(live) = slot.live.as_ref() {
                        slot.serve(live).await;
                    }
                    // The previous agent process may have died before it
                    // reported this container; saying it again is harmless.
                    let version = slot
                        .live
                        .as_ref()
                        .map(|l| l.version_id.clone())
                        .unwrap_or_default();
                    slot.report(
                        &version,
                        ContainerStatus::Running,
                        None,
                        Some("adopted after an agent restart".into()),
                    )
                    .await;
                } else if held {
                    // Stopped for a hold before the agent restarted: it
                    // stays so.
                    slot.down = true;
                    let version = slot
                        .live
                        .as_ref()
                        .map(|l| l.version_id.clone())
                        .unwrap_or_default();
                    slot.report_stopped(&version, container.exit_code, None)
                        .await;
                } else {
                    slot.died(container.exit_code, exit_reason(&container), false)
                        .await;
                }
            }
            _ => {
                tracing::info!(container = %container.id, "removing a leftover container");
                let _ = docker.stop(&container.id, Duration::from_secs(10)).await;
                let _ = docker.remove(&container.id).await;
            }
        }
    }
}

/// Rebuilds `timer` when the period it should tick at changed (`None`: it
/// is not used); the first tick comes one period from now.
async fn retime(
    timer: &mut tokio::time::Interval,
    current: &mut Option<Duration>,
    wanted: Option<Duration>,
) {
    if wanted == *current {
        return;
    }
    *current = wanted;
    *timer = tokio::time::interval(wanted.unwrap_or(Duration::from_secs(3600)));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer.tick().await;
}

/// Runs a slot until it is no longer wanted and its container is gone.
/// `operator` carries an operator's restart, stop or start; `poke` is
/// notified on any engine event of the slot's containers (the slot then
/// looks for itself, so the router never waits on a busy slot).
pub async fn run<E: Engine>(
    ctx: Arc<Context<E>>,
    stack_id: String,
    flag: String,
    mut wanted: watch::Receiver<Option<Wanted>>,
    mut operator: mpsc::Receiver<flotilla_common::wire::messages::Action>,
    poke: Arc<tokio::sync::Notify>,
    found: Vec<Inspected>,
) {
    let held = ctx.store.held(&stack_id, &flag);
    let mut slot = Slot {
        ctx,
        stack_id,
        flag,
        live: None,
        down: false,
        memory: Memory {
            held,
            ..Memory::default()
        },
        crashes: Crashes::default(),
        start_backoff: start_backoff(),
        last_poll_error: None,
    };
    let mut initial = wanted.borrow().clone();
    if initial.is_none() && !found.is_empty() {
        // Containers no desired state wants: the controller may still be
        // about to want them (a desired state in flight), so wait a while.
        tracing::info!(stack_id = %slot.stack_id, flag = %slot.flag, grace_secs = slot.ctx.orphan_grace.as_secs(), "unwanted containers; removing after the grace period");
        let _ = tokio::time::timeout(slot.ctx.orphan_grace, wanted.changed()).await;
        initial = wanted.borrow().clone();
    }
    adopt(&mut slot, initial.as_ref(), found).await;
    let mut probe_timer = tokio::time::interval(Duration::from_secs(3600));
    probe_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probe_interval = None;
    let mut git_timer = tokio::time::interval(Duration::from_secs(3600));
    let mut git_interval: Option<Duration> = None;
    loop {
        let want = wanted.borrow_and_update().clone();
        let observed = slot.live.as_ref().map(|live| Observed {
            hash: live.hash.clone(),
            down: slot.down,
        });
        let asked = want.as_ref().map(|w| Want {
            hash: w.hash.clone(),
            version_id: w.version_id.clone(),
            held: w.held,
        });
        let step = decide(
            observed.as_ref(),
            asked.as_ref(),
            &slot.memory,
            Instant::now(),
        );
        if step != Step::Wait(None) {
            tracing::debug!(stack_id = %slot.stack_id, flag = %slot.flag, ?step, "slot step");
        }
        let started = Instant::now();
        let wake_at = match (step, want.as_ref(), slot.live.take()) {
            (Step::Finish, _, _) => {
                slot.unserve().await;
                // The stack left this agent: a later placement starts fresh.
                if let Err(err) = slot
                    .ctx
                    .store
                    .release_hold(&slot.stack_id, &slot.flag)
                    .await
                {
                    tracing::warn!(stack_id = %slot.stack_id, flag = %slot.flag, error = %err, "cannot forget the hold");
                }
                return;
            }
            (Step::Retire | Step::RetireForNewVersion, _, Some(live)) => {
                slot.unserve().await;
                slot.retire(live, step == Step::Retire).await;
                slot.down = false;
                continue;
            }
            (Step::RecordHeld, Some(w), live) => {
                slot.live = live;
                slot.report_stopped(&w.version_id, None, None).await;
                continue;
            }
            (Step::StopForHold, _, live) => {
                slot.live = live;
                slot.stop_for_hold().await;
                continue;
            }
            (Step::Resume, _, live) => {
                slot.live = live;
                slot.resume().await;
                continue;
            }
            (Step::Start, Some(w), None) => {
                slot.memory.reported_stopped = None;
                slot.start_new(w).await;
                slot.ctx
                    .metrics
                    .reconcile
                    .observe(started.elapsed().as_secs_f64());
                continue;
            }
            (Step::Update, Some(w), Some(live)) => {
                slot.update(w, live, false).await;
                slot.ctx
                    .metrics
                    .reconcile
                    .observe(started.elapsed().as_secs_f64());
                continue;
            }
            (Step::Restart, _, live) => {
                slot.live = live;
                slot.restart().await;
                continue;
            }
            (Step::Wait(at), _, live) => {
                slot.live = live;
                at
            }
            (step, _, live) => {
                // decide only names steps the inputs allow; this is a bug.
                tracing::error!(stack_id = %slot.stack_id, flag = %slot.flag, ?step, "a step its inputs do not allow");
                slot.live = live;
                None
            }
        };
        let interval = slot
            .live
            .as_ref()
            .and_then(|l| l.spec.health.as_ref())
            .map(|h| h.interval);
        retime(&mut probe_timer, &mut probe_interval, interval).await;
        let poll = slot
            .live
            .as_ref()
            .and_then(|l| l.spec.git.as_ref())
            .and_then(|g| g.poll);
        retime(&mut git_timer, &mut git_interval, poll).await;
        let settled = slot.memory.restart_at.is_none()
            && !slot.down
            && slot
                .live
                .as_ref()
                .is_some_and(|l| slot.memory.gave_up.as_ref() != Some(&l.hash));
        tokio::select! {
            changed = wanted.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            action = operator.recv() => {
                let Some(action) = action else { return };
                let stack_held = want.as_ref().is_some_and(|w| w.held);
                slot.operate(action, stack_held).await;
            }
            () = poke.notified() => slot.observe().await,
            () = async { match wake_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            } } => {}
            _ = git_timer.tick(), if git_interval.is_some() && settled => {
                if let Some(w) = want.clone() {
                    slot.poll_git(&w).await;
                }
            }
            _ = probe_timer.tick(), if probe_interval.is_some() && settled => slot.probe_tick().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_common::policy::Policy;

    fn wanted(policy: Policy) -> Wanted {
        Wanted {
            stack_id: "mo-a-1-tk".into(),
            flag: "web".into(),
            version_id: "v".into(),
            spec_json: String::new(),
            generation: 1,
            hash: "h".into(),
            pool: "team-b".into(),
            policy,
            scoped_volumes: true,
            held: false,
        }
    }

    #[test]
    fn the_agent_refuses_what_the_pool_forbids_even_if_it_was_sent() {
        let allow_srv = Policy {
            host_paths: vec!["/srv/data".into()],
            ..Default::default()
        };
        for (section, policy, allowed) in [
            (r#"{"image": "web"}"#, Policy::default(), true),
            (
                r#"{"image": "web", "volumes": ["cache:/c"]}"#,
                Policy::default(),
                true,
            ),
            (
                r#"{"image": "web", "volumes": ["/var/run/docker.sock:/s"]}"#,
                Policy::default(),
                false,
            ),
            (
                r#"{"image": "web", "volumes": ["/srv/data/x:/x"]}"#,
                allow_srv.clone(),
                true,
            ),
            (
                r#"{"image": "web", "volumes": ["/srv/database:/x"]}"#,
                allow_srv.clone(),
                false,
            ),
            (r#"{"image": "web", "privileged": true}"#, allow_srv, false),
            (
                r#"{"image": "web", "network_mode": "host"}"#,
                Policy {
                    allow_host_network: true,
                    ..Default::default()
                },
                true,
            ),
        ] {
            let spec = ContainerSpec::parse(section).expect(section);
            let gate = policy_gate(&spec, &wanted(policy));
            assert_eq!(gate.is_ok(), allowed, "{section}: {gate:?}");
            if let Err(why) = gate {
                assert!(why.starts_with("pool team-b forbids this"), "{why}");
            }
        }
    }
}
