//! The spot scenario on the real Docker engine, shared by the end-to-end
//! test (which checks what happens) and the benchmark (which repeats it
//! and prints the delays).
//!
//! A controller and two agents: one on a spot VM (its metadata service is
//! a [`FakeAws`]) and one labelled `lifecycle=on-demand`. A stack with one
//! instance of a container that handles SIGTERM runs on the spot agent.
//! Then the notice goes on, and the scenario waits for: the controller
//! recording it, the replacement running on the on-demand agent, the spot
//! agent's container stopping through its handler, and the drain.

use crate::metadata::FakeAws;
use crate::{
    agent_containers, enroll, ensure_image, AgentProcess, Api, ContainerSweep, ControllerProcess,
};
use anyhow::{ensure, Context};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// The example web image the scenario runs.
pub const IMAGE: &str = "flotilla-test/web:1";

/// The delays measured from the moment the notice went on, in ms.
#[derive(Debug, Clone, Copy)]
pub struct SpotFigures {
    /// Until the controller recorded the notice (its event's time).
    pub recorded_ms: i64,
    /// Until the replacement reported `running`.
    pub replacement_running_ms: i64,
    /// Until the spot agent's container reported `terminated`.
    pub old_stopped_ms: i64,
    /// Until the controller recorded the agent's drained report.
    pub drained_ms: i64,
}

/// What the test checks beyond the figures.
pub struct SpotOutcome {
    pub figures: SpotFigures,
    /// The spot agent as `GET /v3/alm/agents/{id}` showed it right after
    /// the notice, and at the end.
    pub agent_after_notice: Value,
    pub agent_at_end: Value,
    /// Every event of the stack, oldest first.
    pub stack_events: Vec<Value>,
    /// What the container's SIGTERM handler wrote (empty if it never ran).
    pub handler_output: String,
    pub spot_instance: String,
    pub on_demand_instance: String,
    /// The spot agent's containers left on the engine.
    pub spot_containers_left: usize,
}

fn millis_of(time: &Value) -> anyhow::Result<i64> {
    let text = time.as_str().context("event without a time")?;
    Ok(chrono::DateTime::parse_from_rfc3339(text)?.timestamp_millis())
}

/// The first event matching `check`, polled every 20 ms (the delays are
/// taken from the event's own time, not from the polling).
async fn first_event(
    api: &Api,
    query: &str,
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if let Ok(events) = api.get(&format!("/v3/events?{query}")).await {
            if let Some(found) = events.as_array().and_then(|e| e.iter().find(|e| check(e))) {
                return Ok(found.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("no event matched /v3/events?{query} within {limit:?}")
}

/// Enrolls a new agent as `instance`, dialing the controller at `via`;
/// returns its data dir and agent id.
pub async fn enrolled_agent(
    api: &Api,
    via: std::net::SocketAddr,
    instance: &str,
) -> anyhow::Result<(tempfile::TempDir, String)> {
    let dir = tempfile::tempdir()?;
    let (token, fingerprint) = api.join_token(json!({})).await?;
    let (ok, out, err) = enroll(dir.path(), via, &token, &fingerprint, instance)?;
    ensure!(ok, "{out}{err}");
    let agent_id = out.split_whitespace().nth(2).unwrap_or_default().to_owned();
    Ok((dir, agent_id))
}

/// The stack: one instance of the web image under a shell that, on
/// SIGTERM, writes to the bind-mounted `out` and exits 42.
fn template(out: &Path) -> Value {
    let script = "trap 'echo handled >> /out/sigterm; exit 42' TERM; \
                  httpd -p 80 -h /www; while :; do sleep 0.1; done";
    json!({
        "version": "2017-03-03",
        "label": "spot",
        "configurations": [{
            "role": "web", "flag": "Web01",
            "provision": {"instance_count": 1},
            "container": {
                "image": IMAGE,
                "command": ["sh", "-c", script],
                "volumes": [format!("{}:/out", out.display())],
                "stop_grace_period": "10s",
                "health_check": {"http": {"path": "/", "port": 80}, "interval": "200ms", "timeout": "1s", "retries": 3}
            }
        }]
    })
}

/// Runs the scenario once; `tag` keeps instance ids and networks apart.
pub async fn run(tag: &str) -> anyhow::Result<SpotOutcome> {
    ensure_image(IMAGE)?;
    let dir = tempfile::tempdir()?;
    let controller = ControllerProcess::spawn(dir.path(), &["--heartbeat", "1"], &[])?;
    let api = Api::admin(&controller.url(""), dir.path()).await?;

    let spot_instance = format!("i-spot-{tag}");
    let on_demand_instance = format!("i-od-{tag}");
    let aws = FakeAws::start(&spot_instance, "m5.large", "spot").await?;
    let (spot_dir, spot_id) = enrolled_agent(&api, controller.quic_addr, &spot_instance).await?;
    let _spot_sweep = ContainerSweep(spot_id.clone());
    let spot_network = format!("flotilla-test-{spot_instance}");
    let spot = AgentProcess::spawn_with(
        spot_dir.path(),
        &[
            "--docker-network",
            &spot_network,
            "--cloud",
            "aws",
            "--metadata-url",
            &aws.url,
            "--spot-poll-interval",
            "1s",
        ],
    )?;
    spot.wait_log("connected to the controller", Duration::from_secs(20))?;

    let out = tempfile::tempdir()?;
    // The handler writes to a host directory: the pool must allow it.
    api.set_pool_policy(
        "default",
        json!({ "host_paths": [out.path().display().to_string()] }),
    )
    .await?;
    let stack = api.apply(&template(out.path())).await?;
    let path = format!("/v3/alm/stack/{stack}");
    let described = api
        .wait_for(&path, Duration::from_secs(60), |s| {
            s["stack_status"] != "CREATE_IN_PROGRESS"
        })
        .await?;
    ensure!(
        described["stack_status"] == "CREATE_COMPLETE",
        "the stack did not start on the spot agent: {described}"
    );

    let (od_dir, od_id) = enrolled_agent(&api, controller.quic_addr, &on_demand_instance).await?;
    let _od_sweep = ContainerSweep(od_id.clone());
    let od_network = format!("flotilla-test-{on_demand_instance}");
    let on_demand = AgentProcess::spawn_with(
        od_dir.path(),
        &[
            "--docker-network",
            &od_network,
            "--label",
            "lifecycle=on-demand",
        ],
    )?;
    on_demand.wait_log("connected to the controller", Duration::from_secs(20))?;

    let deadline = chrono::Utc::now() + chrono::Duration::seconds(120);
    let flipped = aws.notice(
        "terminate",
        &deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    let stack_query = format!("stack_id={stack}");
    let recorded = first_event(
        &api,
        &format!("{stack_query}&type=spot.shutdown"),
        Duration::from_secs(10),
        |_| true,
    )
    .await?;
    let agent_after_notice = api.get(&format!("/v3/alm/agents/{spot_id}")).await?;
    let running = match first_event(
        &api,
        &format!("{stack_query}&type=container.status&instance_id={on_demand_instance}"),
        Duration::from_secs(60),
        |e| e["data"]["status"] == "running",
    )
    .await
    {
        Ok(event) => event,
        Err(err) => {
            let events = api.get(&format!("/v3/events?{stack_query}")).await?;
            let agents = api.get("/v3/alm/agents").await?;
            return Err(err.context(format!(
                "events: {events}\nagents: {agents}\non-demand agent:\n{}",
                on_demand.log_text()
            )));
        }
    };
    let stopped = first_event(
        &api,
        &format!("{stack_query}&type=container.status&instance_id={spot_instance}"),
        Duration::from_secs(60),
        |e| e["data"]["status"] == "terminated",
    )
    .await?;
    let drained = first_event(
        &api,
        &format!("type=agent.drained&instance_id={spot_instance}"),
        Duration::from_secs(60),
        |_| true,
    )
    .await?;
    api.wait_for(&path, Duration::from_secs(30), |s| {
        s["stack_status"] == "UPDATE_COMPLETE"
    })
    .await?;
    let agent_at_end = api.get(&format!("/v3/alm/agents/{spot_id}")).await?;
    let stack_events = api
        .get(&format!("/v3/events?{stack_query}"))
        .await?
        .as_array()
        .cloned()
        .unwrap_or_default();
    let handler_output = std::fs::read_to_string(out.path().join("sigterm")).unwrap_or_default();
    let spot_containers_left = agent_containers(&spot_id)?.len();
    drop(spot);
    drop(on_demand);
    Ok(SpotOutcome {
        figures: SpotFigures {
            recorded_ms: millis_of(&recorded["time"])? - flipped,
            replacement_running_ms: millis_of(&running["time"])? - flipped,
            old_stopped_ms: millis_of(&stopped["time"])? - flipped,
            drained_ms: millis_of(&drained["time"])? - flipped,
        },
        agent_after_notice,
        agent_at_end,
        stack_events,
        handler_output,
        spot_instance,
        on_demand_instance,
        spot_containers_left,
    })
}
