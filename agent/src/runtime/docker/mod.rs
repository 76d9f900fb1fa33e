//! The Docker engine runtime: makes the desired state real on the local
//! engine through bollard.
//!
//! Order of start-up matters: the event stream is subscribed from a point
//! in time taken *before* existing containers are listed, so nothing that
//! happens in between is missed. Existing containers carrying this agent's
//! labels are adopted (not restarted); leftovers no desired state wants are
//! removed. Then one [`slot`] task per placed configuration supervises its
//! container, and a dispatcher routes engine events to them.

pub mod effects;
pub mod engine;
pub mod git;
pub mod images;
pub mod logs;
pub mod names;
pub mod pre_stop;
pub mod probe;
pub mod slot;

use super::{Runtime, RuntimeCommand};
use crate::state::{AgentStore, Transition};
use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use flotilla_common::wire::messages::DesiredState;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// What every slot shares; `E` is the engine ([`effects::Bollard`] when
/// the agent runs, a fake in the slots' unit tests).
pub struct Context<E = effects::Bollard> {
    pub engine: E,
    pub agent_id: String,
    /// The shared network containers created before per-stack networks
    /// are on (adopted ones stay there until their next update); a
    /// container's address is looked up there first. New containers join
    /// their stack's own network ([`names::network_name`]).
    pub network: String,
    /// Held while a stack's network is looked up or created, so two slots
    /// of one stack never create twins.
    pub network_lock: tokio::sync::Mutex<()>,
    /// Per image repository: pull decisions and their records never
    /// interleave ([`images::ImageLocks`]).
    pub image_locks: images::ImageLocks,
    pub store: AgentStore,
    pub reports: mpsc::Sender<Transition>,
    /// How long containers no desired state wants are left before removal.
    pub orphan_grace: Duration,
    /// Where git mirrors and code releases live.
    pub code_root: std::path::PathBuf,
    /// When the VM goes away (after a cloud notice): stops end by then.
    pub stop_by: std::sync::Mutex<Option<std::time::Instant>>,
    pub metrics: Arc<crate::metrics::AgentMetrics>,
    /// Host ports the agent routes to containers.
    pub traffic: crate::traffic::Traffic,
}

impl<E> Context<E> {
    /// A stop grace period, shortened to end before the VM goes.
    pub fn grace(&self, wanted: Duration) -> Duration {
        let stop_by = self.stop_by.lock().map(|at| *at).unwrap_or(None);
        super::bounded_grace(wanted, stop_by)
    }
}

/// Settings of the Docker runtime.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// Engine socket path.
    pub socket: String,
    /// The shared network of containers from before per-stack networks
    /// (no longer created; adopted containers keep it until replaced).
    pub network: String,
    /// How often stopped containers and unused images are cleaned up.
    pub cleanup_every: Duration,
    /// How long unwanted containers found at start are left before removal.
    pub orphan_grace: Duration,
    /// How long an image the agent pulled must go unused before removal.
    pub image_prune_age: Duration,
    /// Where git mirrors and code releases live (under the agent's data dir).
    pub code_root: std::path::PathBuf,
    /// Who publishes host ports: the agent's nftables table or Docker.
    pub ports: crate::traffic::PortMode,
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            socket: "/var/run/docker.sock".into(),
            network: "flotilla".into(),
            cleanup_every: Duration::from_secs(600),
            orphan_grace: Duration::from_secs(60),
            image_prune_age: Duration::from_secs(86_400),
            code_root: std::path::PathBuf::from("./flotilla-agent-data/code"),
            ports: crate::traffic::PortMode::Nftables,
        }
    }
}

/// See the module documentation.
pub struct DockerRuntime {
    pub docker: Docker,
    pub agent_id: String,
    pub store: AgentStore,
    pub settings: DockerSettings,
    pub metrics: Arc<crate::metrics::AgentMetrics>,
}

impl DockerRuntime {
    /// Connects to the engine. The client timeout covers the longest stop
    /// grace period with room to spare; streams have their own timeouts.
    pub fn connect(
        settings: DockerSettings,
        agent_id: String,
        store: AgentStore,
        metrics: Arc<crate::metrics::AgentMetrics>,
    ) -> Result<DockerRuntime, String> {
        let timeout = crate::runtime::spec::MAX_GRACE.as_secs() + 60;
        let docker =
            Docker::connect_with_socket(&settings.socket, timeout, bollard::API_DEFAULT_VERSION)
                .map_err(|err| {
                    format!(
                        "cannot reach the Docker engine at {}: {err}",
                        settings.socket
                    )
                })?;
        Ok(DockerRuntime {
            docker,
            agent_id,
            store,
            settings,
            metrics,
        })
    }
}

type SlotKey = (String, String);

struct SlotHandle {
    wanted: watch::Sender<Option<slot::Wanted>>,
    /// An operator's restart, stop or start (sent without waiting: a full
    /// queue drops the command with a warning rather than hold up routing).
    operator: mpsc::Sender<flotilla_common::wire::messages::Action>,
    /// Woken on any engine event of the slot's containers; wake-ups
    /// coalesce, so routing never waits on a busy slot.
    poke: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

fn wanted_slots(desired: &DesiredState) -> HashMap<SlotKey, slot::Wanted> {
    desired
        .placements
        .iter()
        .map(|p| {
            (
                (p.stack_id.clone(), p.flag.clone()),
                slot::Wanted {
                    stack_id: p.stack_id.clone(),
                    flag: p.flag.clone(),
                    version_id: p.version_id.clone(),
                    spec_json: p.spec_json.clone(),
                    generation: desired.generation,
                    hash: names::spec_hash(&p.spec_json),
                    pool: p.pool.clone(),
                    policy: p.policy.clone(),
                    scoped_volumes: p.scoped_volumes,
                    held: p.held,
                },
            )
        })
        .collect()
}

/// The images (normalised) the desired state's configurations name: a
/// prune leaves them, even between a pull and the container's create.
fn wanted_images(desired: &DesiredState) -> HashSet<String> {
    desired
        .placements
        .iter()
        .filter_map(|p| crate::runtime::spec::ContainerSpec::parse(&p.spec_json).ok())
        .map(|spec| images::normalize(&spec.image))
        .collect()
}

impl Runtime for DockerRuntime {
    fn spawn(
        self: Box<Self>,
        desired: watch::Receiver<Arc<DesiredState>>,
        reports: mpsc::Sender<Transition>,
        commands: mpsc::Receiver<RuntimeCommand>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if let Err(err) = self.run(desired, reports, commands).await {
                tracing::error!(error = %err, "Docker runtime stopped");
            }
        })
    }
}

impl DockerRuntime {
    async fn run(
        self: Box<Self>,
        mut desired: watch::Receiver<Arc<DesiredState>>,
        reports: mpsc::Sender<Transition>,
        mut commands: mpsc::Receiver<RuntimeCommand>,
    ) -> Result<(), String> {
        let docker = self.docker.clone();
        git::remove_shared_mirrors(&self.settings.code_root);
        let ctx = Arc::new(Context {
            engine: effects::Bollard {
                docker: docker.clone(),
                network: self.settings.network.clone(),
            },
            agent_id: self.agent_id.clone(),
            network: self.settings.network.clone(),
            network_lock: tokio::sync::Mutex::new(()),
            image_locks: Default::default(),
            store: self.store.clone(),
            reports,
            orphan_grace: self.settings.orphan_grace,
            code_root: self.settings.code_root.clone(),
            stop_by: std::sync::Mutex::new(None),
            metrics: self.metrics.clone(),
            traffic: crate::traffic::Traffic::start(
                self.settings.ports,
                &self.agent_id,
                self.store.clone(),
            )
            .await,
        });
        // Subscribe from a time before the listing, so no event falls between.
        let since = flotilla_common::time::now_ms().div_euclid(1000) - 1;
        let mut found: HashMap<SlotKey, Vec<engine::Inspected>> = HashMap::new();
        for summary in engine::list_labelled(&docker, names::AGENT, &self.agent_id).await? {
            let Some(id) = summary.id else { continue };
            if let Some(container) = engine::inspect(&docker, &id, &ctx.network).await? {
                let key = (
                    container
                        .labels
                        .get(names::STACK)
                        .cloned()
                        .unwrap_or_default(),
                    container
                        .labels
                        .get(names::FLAG)
                        .cloned()
                        .unwrap_or_default(),
                );
                found.entry(key).or_default().push(container);
            }
        }
        tracing::info!(
            containers = found.values().map(Vec::len).sum::<usize>(),
            "existing containers found"
        );
        // Routes of slots that have neither a container nor a placement
        // here any more (they ended while the agent was down).
        let mut keep: HashSet<SlotKey> = found.keys().cloned().collect();
        keep.extend(wanted_slots(&desired.borrow()).into_keys());
        ctx.traffic.forget_except(&keep).await;
        let (event_tx, mut event_rx) = mpsc::channel::<SlotKey>(256);
        tokio::spawn(dispatch_events(
            docker.clone(),
            self.agent_id.clone(),
            since,
            event_tx,
        ));
        let mut slots: HashMap<SlotKey, SlotHandle> = HashMap::new();
        let mut cleanup = tokio::time::interval(self.settings.cleanup_every);
        cleanup.tick().await;
        let mut commands_open = true;
        // Set by a drain: nothing is wanted any more, whatever the desired
        // state says; the senders wait for every slot to end.
        let mut draining = false;
        let mut drain_waiters: Vec<(oneshot::Sender<u32>, u32)> = Vec::new();
        loop {
            let state = desired.borrow_and_update().clone();
            let wanted = if draining {
                HashMap::new()
            } else {
                wanted_slots(&state)
            };
            slots.retain(|_, handle| !handle.task.is_finished());
            if slots.is_empty() && found.is_empty() {
                for (done, stopped) in drain_waiters.drain(..) {
                    let _ = done.send(stopped);
                }
            }
            for (key, want) in &wanted {
                match slots.get(key) {
                    Some(handle) => {
                        handle.wanted.send_if_modified(|current| {
                            let changed = current.as_ref() != Some(want);
                            *current = Some(want.clone());
                            changed
                        });
                    }
                    None => {
                        let handle = spawn_slot(
                            &ctx,
                            key,
                            Some(want.clone()),
                            found.remove(key).unwrap_or_default(),
                        );
                        slots.insert(key.clone(), handle);
                    }
                }
            }
            for (key, handle) in &slots {
                if !wanted.contains_key(key) {
                    handle
                        .wanted
                        .send_if_modified(|current| current.take().is_some());
                }
            }
            // Leftovers of slots nobody wants: remove them.
            for (key, containers) in found.drain() {
                if !wanted.contains_key(&key) {
                    let handle = spawn_slot(&ctx, &key, None, containers);
                    slots.insert(key, handle);
                }
            }
            tokio::select! {
                changed = desired.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                Some(key) = event_rx.recv() => {
                    if let Some(handle) = slots.get(&key) {
                        handle.poke.notify_one();
                    }
                }
                command = commands.recv(), if commands_open => match command {
                    Some(RuntimeCommand::Act(command)) => {
                        for ((stack, flag), handle) in &slots {
                            let ours = *stack == command.stack_id && command.flag.as_ref().is_none_or(|f| f == flag);
                            if ours && handle.operator.try_send(command.action).is_err() {
                                tracing::warn!(stack_id = %stack, flag = %flag, action = ?command.action, "the slot has too many operator commands queued; this one is dropped");
                            }
                        }
                    }
                    Some(RuntimeCommand::Logs { request, sink }) => {
                        tokio::spawn(logs::stream(docker.clone(), self.agent_id.clone(), request, sink));
                    }
                    Some(RuntimeCommand::Deadline(at)) => {
                        if let Ok(mut stop_by) = ctx.stop_by.lock() {
                            *stop_by = Some(at);
                        }
                    }
                    Some(RuntimeCommand::Drain { done }) => {
                        let live = u32::try_from(slots.len() + found.len()).unwrap_or(u32::MAX);
                        tracing::warn!(containers = live, "draining: stopping every container");
                        if !draining {
                            draining = true;
                            // Wake even slots waiting out the orphan grace.
                            for handle in slots.values() {
                                handle.wanted.send_replace(None);
                            }
                        }
                        drain_waiters.push((done, live));
                    }
                    None => commands_open = false,
                },
                () = tokio::time::sleep(Duration::from_millis(100)), if !drain_waiters.is_empty() => {}
                _ = cleanup.tick() => {
                    let live: HashSet<&str> = slots.keys().map(|(stack, _)| stack.as_str()).collect();
                    clean_up(&docker, &self.agent_id, &live).await;
                    images::prune(&docker, &ctx.store, &wanted_images(&state), self.settings.image_prune_age).await;
                }
            }
        }
    }
}

fn spawn_slot(
    ctx: &Arc<Context>,
    key: &SlotKey,
    wanted: Option<slot::Wanted>,
    found: Vec<engine::Inspected>,
) -> SlotHandle {
    let (wanted_tx, wanted_rx) = watch::channel(wanted);
    let (operator_tx, operator_rx) = mpsc::channel(32);
    let poke = Arc::new(tokio::sync::Notify::new());
    let task = tokio::spawn(slot::run(
        ctx.clone(),
        key.0.clone(),
        key.1.clone(),
        wanted_rx,
        operator_rx,
        poke.clone(),
        found,
    ));
    SlotHandle {
        wanted: wanted_tx,
        operator: operator_tx,
        poke,
        task,
    }
}

/// Follows the engine's container events for this agent's containers and
/// names the slot each one concerns (the slot looks for itself what
/// happened). bollard's stream does not resubscribe: on error or
/// end this subscribes again from the last event seen.
async fn dispatch_events(
    docker: Docker,
    agent_id: String,
    mut since: i64,
    out: mpsc::Sender<SlotKey>,
) {
    loop {
        let options = EventsOptions {
            since: Some(since.to_string()),
            until: None,
            filters: Some(HashMap::from([
                ("type".to_owned(), vec!["container".to_owned()]),
                // Only what a slot must look at: a container that stopped
                // or went (exec probes and pre-stop hooks make events too).
                (
                    "event".to_owned(),
                    vec!["die".to_owned(), "destroy".to_owned()],
                ),
                (
                    "label".to_owned(),
                    vec![format!("{}={agent_id}", names::AGENT)],
                ),
            ])),
        };
        let mut stream = docker.events(Some(options));
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(event) => event,
                Err(err) => {
                    tracing::warn!(error = %engine::describe(&err), "Docker event stream failed; resubscribing");
                    break;
                }
            };
            if let Some(time) = event.time {
                since = since.max(time);
            }
            let Some(actor) = event.actor else { continue };
            let attributes = actor.attributes.unwrap_or_default();
            let key = (
                attributes.get(names::STACK).cloned().unwrap_or_default(),
                attributes.get(names::FLAG).cloned().unwrap_or_default(),
            );
            if out.send(key).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Removes stopped containers this agent left behind and the networks of
/// stacks that have no slot here any more (images: [`images::prune`]).
/// Only this agent's containers, and only of stacks it has no slot for: a
/// slot's own stopped container (an operator's stop, the old one during an
/// update) is the slot's to keep or remove, and other agents' containers
/// on the same engine are theirs.
async fn clean_up(docker: &Docker, agent_id: &str, live_stacks: &HashSet<&str>) {
    match engine::list_labelled(docker, names::AGENT, agent_id).await {
        Ok(containers) => {
            let mut removed = 0;
            for container in containers {
                let stack = container
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(names::STACK))
                    .cloned()
                    .unwrap_or_default();
                if !prunable(container.state, live_stacks.contains(stack.as_str())) {
                    continue;
                }
                let Some(id) = container.id else { continue };
                match engine::remove_stopped(docker, &id).await {
                    Ok(()) => removed += 1,
                    Err(err) => {
                        tracing::warn!(container = %id, error = %err, "removing a stopped container failed")
                    }
                }
            }
            tracing::info!(removed, "stopped containers pruned");
        }
        Err(err) => tracing::warn!(error = %err, "container prune failed"),
    }
    remove_unused_networks(docker, agent_id, live_stacks).await;
}

/// Whether the clean-up removes a container of this agent: stopped, and of
/// a stack no slot here runs.
fn prunable(
    state: Option<bollard::models::ContainerSummaryStateEnum>,
    stack_has_slot: bool,
) -> bool {
    use bollard::models::ContainerSummaryStateEnum as State;
    !stack_has_slot && matches!(state, Some(State::EXITED | State::CREATED | State::DEAD))
}

/// Removes the networks of stacks with no slot on this agent (a slot ends
/// only once its container is gone). One that still has containers (a
/// removal that failed) stays for the next round.
async fn remove_unused_networks(docker: &Docker, agent_id: &str, live_stacks: &HashSet<&str>) {
    let networks = match engine::stack_networks(docker, agent_id).await {
        Ok(networks) => networks,
        Err(err) => {
            tracing::warn!(error = %err, "listing stack networks failed");
            return;
        }
    };
    for (id, stack_id) in networks {
        if live_stacks.contains(stack_id.as_str()) {
            continue;
        }
        match engine::remove_network(docker, &id).await {
            Ok(true) => tracing::info!(stack_id = %stack_id, "stack network removed"),
            Ok(false) => tracing::debug!(stack_id = %stack_id, "stack network still in use"),
            Err(err) => {
                tracing::warn!(stack_id = %stack_id, error = %err, "stack network removal failed")
            }
        }
    }
}

#[cfg(test)]
mod clean_up_tests {
    use super::*;

    #[test]
    fn clean_up_keeps_slots_and_running_containers() {
        use bollard::models::ContainerSummaryStateEnum as State;
        for (state, has_slot, removed) in [
            (Some(State::EXITED), false, true),
            (Some(State::DEAD), false, true),
            (Some(State::EXITED), true, false),
            (Some(State::RUNNING), false, false),
            (Some(State::RESTARTING), false, false),
            (None, false, false),
        ] {
            assert_eq!(
                prunable(state, has_slot),
                removed,
                "{state:?} slot={has_slot}"
            );
        }
    }
}
