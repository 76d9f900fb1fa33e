//! Host ports the agent routes itself, so an update switches traffic from
//! the old container to the new one without dropping a request.
//!
//! Docker publishes a port by binding it to one container: two containers
//! cannot hold it at once, so a replacement has to stop the old one first.
//! Here the containers publish nothing; the agent keeps an nftables table
//! of DNAT rules (host address and port → container address and port) and
//! points a port at the new container once it is healthy. The kernel does
//! the forwarding, so throughput and latency are the kernel's, the
//! client's source address reaches the container (connections from the
//! host's own 127.0.0.1 take the bridge's address, as with Docker), TCP and
//! UDP both work, and the rules stay in place while the agent restarts or
//! is upgraded: traffic never passes through the agent process. The agent
//! needs `CAP_NET_ADMIN` for this and nothing else. Connections from other
//! hosts are forwarded, so they pass Docker's FORWARD chain: one rule in
//! `DOCKER-USER` accepts translated connections.
//!
//! # Layout
//! - [`rules`]: the table, rendered from routes (pure).
//! - [`conntrack`]: connections still open to a container (pure parsing).
//! - [`localnet`]: `route_localnet` on routed bridges, for 127.0.0.1.
//! - [`Traffic`]: the routes of every slot, persisted in the agent's store,
//!   applied with `nft -f` after every change.

pub mod conntrack;
pub mod localnet;
pub mod rules;

use crate::runtime::spec::{ContainerSpec, Port};
use crate::state::AgentStore;
pub use rules::{Protocol, Route};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Who publishes containers' host ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortMode {
    /// The agent's nftables table (the default): updates without downtime.
    Nftables,
    /// Docker's own port bindings: an update that keeps a host port stops
    /// the old container before it starts the new one.
    Docker,
}

/// The routes of every slot, and the table made of them.
pub struct Traffic {
    table: String,
    /// `false` when Docker publishes (by choice, or because nft failed).
    routing: bool,
    store: AgentStore,
    /// Serialises changes, so the table written last holds every route.
    routes: tokio::sync::Mutex<BTreeMap<(String, String), Vec<Route>>>,
}

/// Where the kernel lists tracked connections.
const CONNTRACK: &str = "/proc/net/nf_conntrack";

/// How long an old container's connections are given when the kernel
/// does not list them (no `CONFIG_NF_CONNTRACK_PROCFS`).
pub const BLIND_DRAIN: Duration = Duration::from_secs(5);

impl Traffic {
    /// Loads the routes the agent last applied and applies them again (the
    /// same table, so connections are not disturbed). With `PortMode::Docker`,
    /// or when nft cannot be run, Docker publishes and this routes nothing.
    pub async fn start(mode: PortMode, agent_id: &str, store: AgentStore) -> Traffic {
        let table = rules::table_name(agent_id);
        let saved = store.routes().unwrap_or_else(|err| {
            tracing::error!(error = %err, "cannot read the saved routes; starting with none");
            BTreeMap::new()
        });
        let mut traffic = Traffic {
            table,
            routing: mode == PortMode::Nftables,
            store,
            routes: tokio::sync::Mutex::new(saved),
        };
        if !traffic.routing {
            // Docker publishes now: routes of an earlier run would shadow
            // its bindings, so they go.
            if !traffic.routes.lock().await.is_empty() {
                if let Err(err) = nft(&format!(
                    "add table ip {0}\ndelete table ip {0}\n",
                    traffic.table
                ))
                .await
                {
                    tracing::warn!(error = %err, table = %traffic.table, "cannot remove the routes of an earlier run");
                }
                traffic
                    .forget_except(&std::collections::HashSet::new())
                    .await;
            }
        }
        if traffic.routing {
            let routes = traffic.routes.lock().await.clone();
            if let Err(err) = traffic.apply(&routes).await {
                tracing::warn!(error = %err, table = %traffic.table, "cannot write the agent's nftables table; Docker publishes host ports instead, and an update that keeps a host port stops the old container first");
                traffic.routing = false;
            } else {
                tracing::info!(table = %traffic.table, routes = routes.values().map(Vec::len).sum::<usize>(), "host ports are routed by the agent");
            }
        }
        traffic
    }

    /// Whether the agent routes `port` (else Docker publishes it): an IPv4
    /// or unspecified host address, while routing is on.
    pub fn routes_port(&self, port: &Port) -> bool {
        self.routing
            && port.host_port.is_some()
            && port
                .host_ip
                .as_deref()
                .is_none_or(|ip| ip.parse::<Ipv4Addr>().is_ok())
    }

    /// The routes that send `spec`'s routed host ports to a container at
    /// `target`.
    pub fn routes_for(&self, spec: &ContainerSpec, target: Ipv4Addr) -> Vec<Route> {
        spec.ports
            .iter()
            .filter(|p| self.routes_port(p))
            .filter_map(|p| {
                Some(Route {
                    protocol: if p.protocol == "udp" {
                        Protocol::Udp
                    } else {
                        Protocol::Tcp
                    },
                    host_ip: p
                        .host_ip
                        .as_deref()
                        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
                        .filter(|ip| !ip.is_unspecified()),
                    host_port: p.host_port?,
                    target,
                    target_port: p.container_port,
                })
            })
            .collect()
    }

    /// Whether the slot may take `spec`'s routed host ports: no other slot
    /// routes them, and nothing else on the host listens on them (a port
    /// the slot's old container `holds` is its own). The error names the
    /// port, as Docker's "already allocated" does.
    pub async fn check_free(
        &self,
        stack_id: &str,
        flag: &str,
        spec: &ContainerSpec,
        holds: &[Port],
    ) -> Result<(), String> {
        let wanted = self.routes_for(spec, Ipv4Addr::UNSPECIFIED);
        if wanted.is_empty() {
            return Ok(());
        }
        let all = self.routes.lock().await;
        let mine = all.get(&(stack_id.to_owned(), flag.to_owned()));
        for route in &wanted {
            let shown = format!(
                "{}:{}/{}",
                route.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                route.host_port,
                route.protocol.name()
            );
            if let Some(((stack, _), _)) = all.iter().find(|((s, f), routes)| {
                (s != stack_id || f != flag) && routes.iter().any(|r| rules::overlap(r, route))
            }) {
                return Err(format!(
                    "host port {shown} is already allocated (stack {stack})"
                ));
            }
            let own = mine.is_some_and(|routes| routes.iter().any(|r| rules::overlap(r, route)))
                || holds.iter().any(|p| {
                    p.host_port == Some(route.host_port) && p.protocol == route.protocol.name()
                });
            if !own && !bindable(route) {
                return Err(format!(
                    "host port {shown} is already allocated on this host"
                ));
            }
        }
        Ok(())
    }

    /// Points the slot's host ports at `routes` (empty: at nothing), on
    /// disk and in the kernel before it returns.
    pub async fn route(
        &self,
        stack_id: &str,
        flag: &str,
        routes: Vec<Route>,
    ) -> Result<(), String> {
        if !self.routing {
            return Ok(());
        }
        let mut all = self.routes.lock().await;
        let key = (stack_id.to_owned(), flag.to_owned());
        if all.get(&key).map_or(routes.is_empty(), |r| *r == routes) {
            return Ok(());
        }
        for target in routes
            .iter()
            .map(|r| r.target)
            .collect::<std::collections::BTreeSet<_>>()
        {
            localnet::allow(target).await?;
        }
        if routes.is_empty() {
            all.remove(&key);
        } else {
            all.insert(key, routes.clone());
        }
        self.store
            .put_routes(stack_id, flag, &routes)
            .await
            .map_err(|err| err.to_string())?;
        self.apply(&all).await?;
        tracing::info!(stack_id, flag, routes = routes.len(), "host ports routed");
        Ok(())
    }

    /// Forgets the routes of every slot not in `keep` (slots that ended
    /// while the agent was down), on disk and in the kernel.
    pub async fn forget_except(&self, keep: &std::collections::HashSet<(String, String)>) {
        let mut all = self.routes.lock().await;
        let stale: Vec<(String, String)> =
            all.keys().filter(|k| !keep.contains(*k)).cloned().collect();
        if stale.is_empty() {
            return;
        }
        for (stack, flag) in &stale {
            all.remove(&(stack.clone(), flag.clone()));
            if let Err(err) = self.store.put_routes(stack, flag, &[]).await {
                tracing::warn!(stack_id = %stack, flag = %flag, error = %err, "cannot forget a stale route");
            }
        }
        if self.routing {
            if let Err(err) = self.apply(&all).await {
                tracing::warn!(error = %err, "cannot write the table without stale routes");
            }
        }
        tracing::info!(
            slots = stale.len(),
            "routes of slots that are gone forgotten"
        );
    }

    /// Waits until no TCP connection routed to `routes`' targets is open,
    /// at most `limit`; how many were still open then. A kernel that does
    /// not list its connections gets [`BLIND_DRAIN`] (within `limit`) for
    /// requests in flight to finish.
    pub async fn drain(&self, routes: &[Route], limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let Ok(table) = tokio::fs::read_to_string(CONNTRACK).await else {
                tracing::warn!(path = CONNTRACK, wait_ms = BLIND_DRAIN.min(limit).as_millis() as u64, "the kernel does not list tracked connections; waiting a fixed time for the old container's");
                tokio::time::sleep(BLIND_DRAIN.min(limit)).await;
                return 0;
            };
            let open: usize = routes
                .iter()
                .filter(|r| r.protocol == Protocol::Tcp)
                .map(|r| conntrack::open_connections(&table, r.target, r.target_port))
                .sum();
            if open == 0 || Instant::now() >= deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn apply(&self, routes: &BTreeMap<(String, String), Vec<Route>>) -> Result<(), String> {
        let all: Vec<Route> = routes.values().flatten().cloned().collect();
        nft(&rules::ruleset(&self.table, &all)).await?;
        if !all.is_empty() {
            docker_user_accepts_dnat().await;
        }
        Ok(())
    }
}

/// The rule that lets connections from other hosts through Docker's
/// FORWARD chain (its policy is DROP, and it accepts only ports Docker
/// published): translated connections are accepted in `DOCKER-USER`, the
/// chain Docker keeps for its users' rules. Not translated traffic between
/// networks stays under Docker's isolation.
const DOCKER_USER_RULE: [&str; 9] = [
    "DOCKER-USER",
    "-m",
    "conntrack",
    "--ctstate",
    "DNAT",
    "-m",
    "comment",
    "--comment",
    "flotilla-agent: routed host ports",
];

/// Puts [`DOCKER_USER_RULE`] first in `DOCKER-USER` unless it is there
/// (Docker's chain may be missing: then nothing drops these connections).
async fn docker_user_accepts_dnat() {
    let run = |op: &'static str| async move {
        let mut args = vec!["-w", "5", op];
        args.extend_from_slice(&DOCKER_USER_RULE);
        args.extend_from_slice(&["-j", "ACCEPT"]);
        tokio::process::Command::new("iptables")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .is_ok_and(|status| status.success())
    };
    if run("-C").await {
        return;
    }
    if !run("-I").await {
        tracing::warn!("cannot add the DOCKER-USER rule; connections from other hosts to routed ports may be dropped by Docker's FORWARD chain");
    }
}

/// Whether the route's host port can be bound now (nothing listens on it).
fn bindable(route: &Route) -> bool {
    let addr = std::net::SocketAddr::from((
        route.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
        route.host_port,
    ));
    match route.protocol {
        Protocol::Tcp => std::net::TcpListener::bind(addr).is_ok(),
        Protocol::Udp => std::net::UdpSocket::bind(addr).is_ok(),
    }
}

/// Runs `nft -f -` with `script`.
async fn nft(script: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("cannot run nft: {err}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|err| format!("cannot write to nft: {err}"))?;
    }
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .map_err(|_| "nft did not finish within 10 s".to_owned())?
        .map_err(|err| format!("nft: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
