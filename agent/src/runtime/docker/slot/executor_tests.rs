//! The executor's steps against an in-memory engine: a failed start is
//! tried again, a new version that fails its health check leaves the old
//! container serving and is not tried again, an operator's stop outlives
//! the slot, and a container removed behind the agent's back is made
//! again. (The same paths run against the real engine in the integration
//! tests.)

use super::*;
use crate::runtime::docker::images::ImageStep;
use crate::traffic::{PortMode, Traffic};
use bollard::models::ContainerCreateBody;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug)]
struct FakeContainer {
    name: String,
    number: u64,
    running: bool,
    exit_code: Option<i64>,
    labels: HashMap<String, String>,
}

#[derive(Debug, Default)]
struct FakeState {
    containers: HashMap<String, FakeContainer>,
    created: u64,
    /// Starts that fail before one succeeds.
    start_failures: u32,
    /// Containers numbered above this fail every exec (their probe).
    healthy_up_to: u64,
    /// How long an exec runs (a hook that hangs).
    exec_takes: Duration,
    log: Vec<String>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeState>>);

impl Fake {
    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        let mut state = self.0.lock().expect("fake engine lock");
        f(&mut state)
    }

    fn count(&self, op: &str) -> usize {
        self.with(|s| s.log.iter().filter(|l| l.starts_with(op)).count())
    }

    fn running(&self) -> Vec<String> {
        self.with(|s| {
            let mut ids: Vec<String> = s
                .containers
                .iter()
                .filter(|(_, c)| c.running)
                .map(|(id, _)| id.clone())
                .collect();
            ids.sort();
            ids
        })
    }
}

impl Engine for Fake {
    async fn inspect(&self, id: &str) -> Result<Option<Inspected>, String> {
        Ok(self.with(|s| {
            s.containers
                .iter()
                .find(|(key, c)| key.as_str() == id || c.name == id)
                .map(|(key, c)| Inspected {
                    id: key.clone(),
                    running: c.running,
                    exit_code: c.exit_code,
                    oom_killed: false,
                    started_at: None,
                    labels: c.labels.clone(),
                    ip: Some(format!("10.9.0.{}", c.number)),
                    bound_ports: Vec::new(),
                })
        }))
    }

    async fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<Option<String>, String> {
        Ok(self.with(|s| {
            if s.containers.values().any(|c| c.name == name) {
                return None;
            }
            s.created += 1;
            let id = format!("c{}", s.created);
            s.log.push(format!("create {id}"));
            s.containers.insert(
                id.clone(),
                FakeContainer {
                    name: name.to_owned(),
                    number: s.created,
                    running: false,
                    exit_code: None,
                    labels: body.labels.unwrap_or_default(),
                },
            );
            Some(id)
        }))
    }

    async fn start(&self, id: &str) -> Result<(), String> {
        self.with(|s| {
            s.log.push(format!("start {id}"));
            if s.start_failures > 0 {
                s.start_failures -= 1;
                return Err("the engine refused the start".into());
            }
            let c = s.containers.get_mut(id).ok_or("no such container")?;
            c.running = true;
            c.exit_code = None;
            Ok(())
        })
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), String> {
        self.with(|s| {
            s.log.push(format!("stop {id}"));
            if let Some(c) = s.containers.get_mut(id) {
                c.running = false;
                c.exit_code = Some(0);
            }
            Ok(())
        })
    }

    async fn remove(&self, id: &str) -> Result<(), String> {
        self.with(|s| {
            s.log.push(format!("remove {id}"));
            s.containers.remove(id);
            Ok(())
        })
    }

    async fn exec(&self, id: &str, _argv: &[String]) -> Result<i64, String> {
        let takes = self.with(|s| s.exec_takes);
        tokio::time::sleep(takes).await;
        self.with(|s| {
            let number = s.containers.get(id).map_or(0, |c| c.number);
            Ok(if number > s.healthy_up_to { 1 } else { 0 })
        })
    }

    async fn ensure_network(
        &self,
        _name: &str,
        _labels: HashMap<String, String>,
    ) -> Result<String, String> {
        Ok("net".into())
    }

    async fn stack_volumes(&self, _stack_id: &str) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }

    async fn image_label(&self, _image: &str, _label: &str) -> Option<String> {
        None
    }

    async fn prepare_image(
        &self,
        _store: &AgentStore,
        _stack_id: &str,
        _spec: &ContainerSpec,
    ) -> Result<ImageStep, String> {
        Ok(ImageStep::Use)
    }
}

use crate::state::AgentStore;

/// A slot on the fake engine, and what it reports.
struct Harness {
    fake: Fake,
    ctx: Arc<Context<Fake>>,
    reports: mpsc::Receiver<Transition>,
    _dir: tempfile::TempDir,
}

async fn harness(fake: Fake) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = AgentStore::open(dir.path()).expect("store");
    let (tx, reports) = mpsc::channel(256);
    let ctx = Arc::new(Context {
        engine: fake.clone(),
        agent_id: "ag-test".into(),
        network: "flotilla".into(),
        network_lock: tokio::sync::Mutex::new(()),
        image_locks: Default::default(),
        store: store.clone(),
        reports: tx,
        orphan_grace: Duration::from_millis(100),
        code_root: dir.path().join("code"),
        stop_by: std::sync::Mutex::new(None),
        metrics: Arc::new(crate::metrics::AgentMetrics::new()),
        traffic: Traffic::start(PortMode::Docker, "ag-test", store).await,
    });
    Harness {
        fake,
        ctx,
        reports,
        _dir: dir,
    }
}

fn wanted(version: &str, container: &str) -> Wanted {
    Wanted {
        stack_id: "st-1".into(),
        flag: "Web01".into(),
        version_id: version.into(),
        spec_json: container.into(),
        generation: 1,
        hash: names::spec_hash(container),
        pool: "default".into(),
        policy: Default::default(),
        scoped_volumes: true,
        held: false,
    }
}

/// A running slot's inputs.
struct Running {
    wanted: watch::Sender<Option<Wanted>>,
    operator: mpsc::Sender<flotilla_common::wire::messages::Action>,
    poke: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn(h: &Harness, want: Wanted, found: Vec<Inspected>) -> Running {
    let (wanted, wanted_rx) = watch::channel(Some(want));
    let (operator, operator_rx) = mpsc::channel(8);
    let poke = Arc::new(tokio::sync::Notify::new());
    let task = tokio::spawn(run(
        h.ctx.clone(),
        "st-1".into(),
        "Web01".into(),
        wanted_rx,
        operator_rx,
        poke.clone(),
        found,
    ));
    Running {
        wanted,
        operator,
        poke,
        task,
    }
}

/// Reports until one of `version` has `status`; all of them, in order.
async fn until(h: &mut Harness, version: &str, status: ContainerStatus) -> Vec<Transition> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let next = tokio::time::timeout_at(deadline, h.reports.recv()).await;
        let Ok(Some(transition)) = next else {
            panic!("no {status} for {version}; saw {seen:#?}");
        };
        let done = transition.version_id == version && transition.status == status;
        seen.push(transition);
        if done {
            return seen;
        }
    }
}

fn statuses(seen: &[Transition]) -> Vec<String> {
    seen.iter().map(|t| t.status.to_string()).collect()
}

const PLAIN: &str = r#"{"image": "web"}"#;
const CHECKED: &str =
    r#"{"image": "web", "health_check": {"command": "true", "interval": "100ms", "retries": 1}}"#;
const CHECKED_V2: &str = r#"{"image": "web", "environment_variables": {"V": "2"}, "health_check": {"command": "true", "interval": "100ms", "retries": 1}}"#;

#[tokio::test]
async fn a_failed_start_is_tried_again_after_its_backoff() {
    let fake = Fake::default();
    fake.with(|s| s.start_failures = 1);
    let mut h = harness(fake).await;
    let slot = spawn(&h, wanted("v1", PLAIN), Vec::new());
    let seen = until(&mut h, "v1", ContainerStatus::Running).await;
    assert_eq!(
        statuses(&seen),
        ["starting", "start-failure", "starting", "running"]
    );
    let reason = seen[1].reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("the engine refused the start; retry in "),
        "{reason}"
    );
    assert_eq!(
        h.fake.count("create"),
        2,
        "the failed one was removed, a new one made"
    );
    assert_eq!(h.fake.running().len(), 1);
    drop(slot.wanted);
    let _ = slot.task.await;
}

#[tokio::test]
async fn a_new_version_failing_its_health_check_leaves_the_old_one_serving() {
    let fake = Fake::default();
    fake.with(|s| s.healthy_up_to = 1);
    let mut h = harness(fake).await;
    let slot = spawn(&h, wanted("v1", CHECKED), Vec::new());
    until(&mut h, "v1", ContainerStatus::Running).await;
    let old = h.fake.running();
    slot.wanted.send_replace(Some(wanted("v2", CHECKED_V2)));
    let seen = until(&mut h, "v2", ContainerStatus::ProbeFailure).await;
    assert_eq!(statuses(&seen), ["updating", "probe-failure"]);
    let reason = seen[1].reason.clone().unwrap_or_default();
    assert!(reason.ends_with("; rolled back to version v1"), "{reason}");
    // Not tried again: the old container serves on, nothing new is made.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.fake.running(), old);
    assert_eq!(h.fake.count("create"), 2);
    assert!(h.reports.try_recv().is_err(), "nothing more was reported");
    drop(slot.wanted);
    let _ = slot.task.await;
}

#[tokio::test]
async fn an_operators_stop_outlives_the_slot_and_a_start_ends_it() {
    let mut h = harness(Fake::default()).await;
    let slot = spawn(&h, wanted("v1", PLAIN), Vec::new());
    until(&mut h, "v1", ContainerStatus::Running).await;
    let id = h.fake.running().remove(0);
    slot.operator
        .send(flotilla_common::wire::messages::Action::Stop)
        .await
        .expect("send");
    let seen = until(&mut h, "v1", ContainerStatus::Stopped).await;
    assert_eq!(
        seen.last().and_then(|t| t.reason.clone()).as_deref(),
        Some("stopped by an operator")
    );
    assert!(h.fake.running().is_empty());
    assert!(h.ctx.store.held("st-1", "Web01"), "the hold is on disk");
    // The slot ends (an agent restart) and a new one adopts the container:
    // it stays stopped.
    drop(slot.wanted);
    let _ = slot.task.await;
    let found = h
        .fake
        .inspect(&id)
        .await
        .ok()
        .flatten()
        .into_iter()
        .collect();
    let starts = h.fake.count("start");
    let slot = spawn(&h, wanted("v1", PLAIN), found);
    until(&mut h, "v1", ContainerStatus::Stopped).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.fake.count("start"), starts, "not started again");
    // The operator's start releases it.
    slot.operator
        .send(flotilla_common::wire::messages::Action::Start)
        .await
        .expect("send");
    until(&mut h, "v1", ContainerStatus::Running).await;
    assert_eq!(h.fake.running(), [id]);
    assert!(!h.ctx.store.held("st-1", "Web01"));
    drop(slot.wanted);
    let _ = slot.task.await;
}

#[tokio::test]
async fn a_container_removed_outside_is_made_again() {
    let mut h = harness(Fake::default()).await;
    let slot = spawn(&h, wanted("v1", PLAIN), Vec::new());
    until(&mut h, "v1", ContainerStatus::Running).await;
    let id = h.fake.running().remove(0);
    h.fake.with(|s| s.containers.remove(&id));
    slot.poke.notify_one();
    let seen = until(&mut h, "v1", ContainerStatus::Running).await;
    assert_eq!(statuses(&seen), ["terminated", "starting", "running"]);
    assert_eq!(seen[0].reason.as_deref(), Some("removed outside the agent"));
    assert_eq!(h.fake.running().len(), 1);
    assert_ne!(h.fake.running()[0], id);
    drop(slot.wanted);
    let _ = slot.task.await;
}

#[tokio::test]
async fn a_spot_deadline_cuts_the_pre_stop_hook_short() {
    let mut h = harness(Fake::default()).await;
    let hooked = r#"{"image": "web", "stop_grace_period": "30s", "pre_stop": {"exec": ["/pre_shutdown.sh"], "timeout": "60s"}}"#;
    let slot = spawn(&h, wanted("v1", hooked), Vec::new());
    until(&mut h, "v1", ContainerStatus::Running).await;
    h.fake.with(|s| s.exec_takes = Duration::from_secs(60));
    // The VM goes in 500 ms: the hook (60 s) and the grace (30 s) must end by then.
    if let Ok(mut stop_by) = h.ctx.stop_by.lock() {
        *stop_by = Some(Instant::now() + Duration::from_millis(500));
    }
    let asked = Instant::now();
    slot.wanted.send_replace(None);
    let seen = until(&mut h, "v1", ContainerStatus::Terminated).await;
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "took {:?}",
        asked.elapsed()
    );
    let reason = seen
        .last()
        .and_then(|t| t.reason.clone())
        .unwrap_or_default();
    assert!(reason.starts_with("pre-stop timed out after "), "{reason}");
    assert!(h.fake.running().is_empty());
    let _ = slot.task.await;
}
