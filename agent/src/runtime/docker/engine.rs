//! The Docker engine calls the runtime makes, with the timeouts and
//! retries bollard leaves to its caller: pulls get an inactivity timeout
//! and retries with backoff (credentials go with every attempt), stops are
//! bounded by the grace period, and every error becomes a sentence.

use super::super::spec::{ContainerSpec, NetworkMode, Port, Registry, VolumeSource};
use super::names::VolumeNames;
use backoff::backoff::Backoff;
use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, DeviceMapping, HostConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StartContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

/// Longest silence of a pull's progress stream before it is abandoned.
pub const PULL_INACTIVITY: Duration = Duration::from_secs(60);
/// Pull attempts before giving up.
pub const PULL_ATTEMPTS: u32 = 3;

/// Docker's answer, as a sentence (never containing credentials).
pub fn describe(err: &bollard::errors::Error) -> String {
    match err {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => {
            format!("{} (HTTP {status_code})", message.trim())
        }
        other => other.to_string(),
    }
}

/// Whether the error is a 404 from the engine.
pub fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Whether the error is a 409 (name taken) from the engine.
pub fn is_conflict(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            ..
        }
    )
}

fn credentials(registry: &Registry) -> DockerCredentials {
    DockerCredentials {
        username: Some(registry.username.clone()),
        password: Some(registry.password.clone()),
        serveraddress: Some(registry.server.clone()),
        ..Default::default()
    }
}

/// A label of a local image, if it has it.
pub async fn image_label(docker: &Docker, image: &str, label: &str) -> Option<String> {
    docker
        .inspect_image(image)
        .await
        .ok()?
        .config?
        .labels?
        .remove(label)
}

/// A local image: its id and tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    pub tags: Vec<String>,
    /// `repository@sha256:...` for each registry it was pulled from (none
    /// for an image built on this host).
    pub digests: Vec<String>,
}

/// The local image a reference resolves to; `Ok(None)` when there is none.
pub async fn image_info(docker: &Docker, image: &str) -> Result<Option<ImageInfo>, String> {
    match docker.inspect_image(image).await {
        Ok(inspect) => Ok(inspect.id.map(|id| ImageInfo {
            id,
            tags: inspect.repo_tags.unwrap_or_default(),
            digests: inspect.repo_digests.unwrap_or_default(),
        })),
        Err(err) if is_not_found(&err) => Ok(None),
        Err(err) => Err(describe(&err)),
    }
}

/// Asks the registry for `spec.image`'s manifest with the spec's
/// credentials: proof they grant access, without pulling again.
pub async fn verify(docker: &Docker, spec: &ContainerSpec) -> Result<(), String> {
    docker
        .inspect_registry_image(&spec.image, spec.registry.as_ref().map(credentials))
        .await
        .map(drop)
        .map_err(|err| {
            format!(
                "registry check of {} failed: {}",
                spec.image,
                describe(&err)
            )
        })
}

/// What became of an image reference a prune tried to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// Already gone, or now names another image (not the agent's any more).
    Gone,
    /// A container (running or not) uses the image.
    InUse,
}

/// Removes the tag `reference` if it still names image `id` (never by
/// force: an image a container uses stays).
pub async fn remove_image_reference(
    docker: &Docker,
    reference: &str,
    id: &str,
) -> Result<Removal, String> {
    match image_info(docker, reference).await? {
        Some(info) if info.id == id => {}
        _ => return Ok(Removal::Gone),
    }
    let options = bollard::query_parameters::RemoveImageOptions {
        force: false,
        noprune: false,
        ..Default::default()
    };
    match docker.remove_image(reference, Some(options), None).await {
        Ok(_) => Ok(Removal::Removed),
        Err(err) if is_not_found(&err) => Ok(Removal::Gone),
        Err(err) if is_conflict(&err) => Ok(Removal::InUse),
        Err(err) => Err(describe(&err)),
    }
}

/// Pulls `spec.image` with its credentials: retries with backoff, each
/// attempt abandoned after [`PULL_INACTIVITY`] without progress.
pub async fn pull(docker: &Docker, spec: &ContainerSpec) -> Result<(), String> {
    let (name, tag) = match spec.image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_owned(), tag.to_owned()),
        _ => (spec.image.clone(), "latest".to_owned()),
    };
    let mut delay = backoff::ExponentialBackoff {
        initial_interval: Duration::from_millis(500),
        max_interval: Duration::from_secs(10),
        max_elapsed_time: None,
        ..Default::default()
    };
    let mut last = String::new();
    for attempt in 1..=PULL_ATTEMPTS {
        let options = CreateImageOptions {
            from_image: Some(name.clone()),
            tag: Some(tag.clone()),
            ..Default::default()
        };
        let mut stream =
            docker.create_image(Some(options), None, spec.registry.as_ref().map(credentials));
        let outcome = loop {
            match tokio::time::timeout(PULL_INACTIVITY, stream.next()).await {
                Err(_) => break Err(format!("no progress for {} s", PULL_INACTIVITY.as_secs())),
                Ok(None) => break Ok(()),
                Ok(Some(Err(err))) => break Err(describe(&err)),
                Ok(Some(Ok(info))) => {
                    if let Some(error) = info.error_detail.and_then(|d| d.message) {
                        break Err(error);
                    }
                }
            }
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(err) => {
                tracing::warn!(image = %spec.image, attempt, error = %err, "image pull failed");
                last = err;
                // Authentication and missing images will not fix themselves.
                let lower = last.to_ascii_lowercase();
                if lower.contains("unauthorized")
                    || lower.contains("not found")
                    || lower.contains("denied")
                {
                    break;
                }
                if attempt < PULL_ATTEMPTS {
                    tokio::time::sleep(delay.next_backoff().unwrap_or(Duration::from_secs(5)))
                        .await;
                }
            }
        }
    }
    Err(format!("pull of {} failed: {last}", spec.image))
}

/// The names of the volumes `stack_id`'s containers (running or not)
/// mount.
pub async fn stack_volumes(docker: &Docker, stack_id: &str) -> Result<Vec<String>, String> {
    let containers = list_labelled(docker, super::names::STACK, stack_id).await?;
    Ok(containers
        .into_iter()
        .flat_map(|c| c.mounts.unwrap_or_default())
        .filter(|m| m.typ.as_deref() == Some("volume"))
        .filter_map(|m| m.name)
        .collect())
}

/// The `binds` of a spec: host paths as given, named volumes as the
/// stack's own volume of that name.
fn binds(spec: &ContainerSpec, volumes: &VolumeNames) -> Vec<String> {
    spec.volumes
        .iter()
        .map(|volume| {
            let source = match &volume.source {
                VolumeSource::HostPath(path) => path.clone(),
                VolumeSource::Named(name) => volumes.of(name),
            };
            let mode = if volume.read_only { ":ro" } else { "" };
            format!("{source}:{}{mode}", volume.target)
        })
        .collect()
}

/// The create request for a spec, its named volumes called by `volumes`.
/// A container with `network_mode` host or none joins no network of the
/// agent's. Host ports `routed` by the agent are exposed, not published
/// ([`crate::traffic`]).
pub fn create_body(
    spec: &ContainerSpec,
    volumes: &VolumeNames,
    labels: HashMap<String, String>,
    network: &str,
    routed: impl Fn(&Port) -> bool,
) -> ContainerCreateBody {
    let host = &spec.host;
    let network_mode = match host.network {
        NetworkMode::Bridge => network,
        NetworkMode::Host => "host",
        NetworkMode::None => "none",
    };
    let devices = host
        .devices
        .iter()
        .map(|device| DeviceMapping {
            path_on_host: Some(device.host.clone()),
            path_in_container: Some(device.container.clone()),
            cgroup_permissions: Some(device.permissions.clone()),
        })
        .collect::<Vec<_>>();
    let binds = binds(spec, volumes);
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for port in &spec.ports {
        let key = format!("{}/{}", port.container_port, port.protocol);
        exposed.push(key.clone());
        if let Some(host_port) = port.host_port.filter(|_| !routed(port)) {
            bindings
                .entry(key)
                .or_default()
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: port.host_ip.clone(),
                    host_port: Some(host_port.to_string()),
                });
        }
    }
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: Some(spec.env.clone()),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        stop_timeout: i64::try_from(spec.stop_grace.as_secs()).ok(),
        host_config: Some(HostConfig {
            binds: (!binds.is_empty()).then_some(binds),
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            memory: spec.memory_bytes,
            nano_cpus: spec.nano_cpus,
            network_mode: Some(network_mode.to_owned()),
            privileged: host.privileged.then_some(true),
            cap_add: (!host.cap_add.is_empty()).then(|| host.cap_add.clone()),
            pid_mode: host.host_pid.then(|| "host".to_owned()),
            ipc_mode: host.host_ipc.then(|| "host".to_owned()),
            devices: (!devices.is_empty()).then_some(devices),
            security_opt: (!host.security_opt.is_empty()).then(|| host.security_opt.clone()),
            // The agent applies the restart policy itself, so it can report
            // every restart and give up with app-crashed.
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates a container named `name`; `Ok(None)` when the name is taken
/// (a container this agent created before a crash).
pub async fn create(
    docker: &Docker,
    name: &str,
    body: ContainerCreateBody,
) -> Result<Option<String>, String> {
    let options = CreateContainerOptions {
        name: Some(name.to_owned()),
        ..Default::default()
    };
    match docker.create_container(Some(options), body).await {
        Ok(created) => Ok(Some(created.id)),
        Err(err) if is_conflict(&err) => Ok(None),
        Err(err) => Err(describe(&err)),
    }
}

/// Starts a container.
pub async fn start(docker: &Docker, id: &str) -> Result<(), String> {
    docker
        .start_container(id, None::<StartContainerOptions>)
        .await
        .map_err(|err| describe(&err))
}

/// Stops a container: SIGTERM, then SIGKILL after `grace`. A container that
/// is already gone or stopped is fine.
pub async fn stop(docker: &Docker, id: &str, grace: Duration) -> Result<(), String> {
    let options = StopContainerOptions {
        t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
        signal: None,
    };
    match docker.stop_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304 | 404,
            ..
        }) => Ok(()),
        Err(err) => Err(describe(&err)),
    }
}

/// Removes a stopped container (never by force: one that started again
/// meanwhile stays), with its anonymous volumes.
pub async fn remove_stopped(docker: &Docker, id: &str) -> Result<(), String> {
    remove_with(docker, id, false).await
}

/// Removes a container (forcibly: it is stopped already, or must go).
pub async fn remove(docker: &Docker, id: &str) -> Result<(), String> {
    remove_with(docker, id, true).await
}

async fn remove_with(docker: &Docker, id: &str, force: bool) -> Result<(), String> {
    let options = RemoveContainerOptions {
        force,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(err) if is_not_found(&err) => Ok(()),
        Err(err) => Err(describe(&err)),
    }
}

/// What the runtime needs from an inspect.
#[derive(Debug, Clone)]
pub struct Inspected {
    pub id: String,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub started_at: Option<String>,
    pub labels: HashMap<String, String>,
    /// The container's address (see [`address_on`]).
    pub ip: Option<String>,
    /// Host ports Docker publishes for it.
    pub bound_ports: Vec<u16>,
}

/// A container's address: on `preferred` (the network containers adopted
/// from before per-stack networks are on) when it is there, else on its
/// one other network (its stack's), the smallest name first.
fn address_on(
    networks: HashMap<String, bollard::models::EndpointSettings>,
    preferred: &str,
) -> Option<String> {
    let mut addresses: Vec<(bool, String, String)> = networks
        .into_iter()
        .filter_map(|(name, endpoint)| {
            let ip = endpoint.ip_address.filter(|ip| !ip.is_empty())?;
            Some((name != preferred, name, ip))
        })
        .collect();
    addresses.sort();
    addresses.into_iter().next().map(|(_, _, ip)| ip)
}

/// Inspects a container; `Ok(None)` when it does not exist.
pub async fn inspect(
    docker: &Docker,
    id: &str,
    network: &str,
) -> Result<Option<Inspected>, String> {
    match docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
    {
        Ok(info) => {
            let state = info.state.unwrap_or_default();
            let mut bound_ports: Vec<u16> = info
                .host_config
                .as_ref()
                .and_then(|h| h.port_bindings.as_ref())
                .into_iter()
                .flat_map(|bindings| bindings.values())
                .flatten()
                .flatten()
                .filter_map(|b| b.host_port.as_deref()?.parse().ok())
                .collect();
            bound_ports.sort_unstable();
            bound_ports.dedup();
            let ip = info
                .network_settings
                .and_then(|n| n.networks)
                .and_then(|networks| address_on(networks, network));
            Ok(Some(Inspected {
                id: info.id.unwrap_or_else(|| id.to_owned()),
                running: state.running.unwrap_or(false),
                exit_code: state.exit_code,
                oom_killed: state.oom_killed.unwrap_or(false),
                started_at: state.started_at,
                labels: info.config.and_then(|c| c.labels).unwrap_or_default(),
                ip,
                bound_ports,
            }))
        }
        Err(err) if is_not_found(&err) => Ok(None),
        Err(err) => Err(describe(&err)),
    }
}

/// Every container (running or not) carrying `label=value`.
pub async fn list_labelled(
    docker: &Docker,
    label: &str,
    value: &str,
) -> Result<Vec<bollard::models::ContainerSummary>, String> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![format!("{label}={value}")],
        )])),
        ..Default::default()
    };
    docker
        .list_containers(Some(options))
        .await
        .map_err(|err| describe(&err))
}

/// Makes sure the bridge network `name` exists (created with `labels`)
/// and returns its id. The engine allows two networks of one name (two
/// creates at once), and then refuses to attach containers to either: the
/// caller serialises its own creates, and any twins found are removed, all
/// but the smallest id, which every caller picks.
pub async fn ensure_network(
    docker: &Docker,
    name: &str,
    labels: HashMap<String, String>,
) -> Result<String, String> {
    let find = || async {
        let options = bollard::query_parameters::ListNetworksOptions {
            filters: Some(HashMap::from([("name".to_owned(), vec![name.to_owned()])])),
        };
        let mut ids: Vec<String> = docker
            .list_networks(Some(options))
            .await
            .map_err(|err| describe(&err))?
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| n.id)
            .collect();
        ids.sort();
        for twin in ids.iter().skip(1) {
            if let Err(err) = docker.remove_network(twin).await {
                tracing::warn!(network = %name, error = %describe(&err), "removing a twin network failed");
            }
        }
        Ok::<_, String>(ids.into_iter().next())
    };
    if let Some(id) = find().await? {
        return Ok(id);
    }
    let request = bollard::models::NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".into()),
        labels: Some(labels),
        ..Default::default()
    };
    if let Err(err) = docker.create_network(request).await {
        if !is_conflict(&err) {
            return Err(describe(&err));
        }
    }
    find()
        .await?
        .ok_or_else(|| format!("network {name} could not be created"))
}

/// This agent's per-stack networks: (network id, stack id).
pub async fn stack_networks(
    docker: &Docker,
    agent_id: &str,
) -> Result<Vec<(String, String)>, String> {
    let options = bollard::query_parameters::ListNetworksOptions {
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![format!("{}={agent_id}", super::names::AGENT)],
        )])),
    };
    let networks = docker
        .list_networks(Some(options))
        .await
        .map_err(|err| describe(&err))?;
    Ok(networks
        .into_iter()
        .filter_map(|n| {
            let stack = n.labels?.remove(super::names::STACK)?;
            Some((n.id?, stack))
        })
        .collect())
}

/// Removes a network; `Ok(false)` when containers are still attached.
pub async fn remove_network(docker: &Docker, id: &str) -> Result<bool, String> {
    match docker.remove_network(id).await {
        Ok(()) => Ok(true),
        Err(err) if is_not_found(&err) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 403 | 409,
            ..
        }) => Ok(false),
        Err(err) => Err(describe(&err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EndpointSettings;

    #[test]
    fn the_address_is_on_the_shared_network_first_else_the_stack_one() {
        let on = |pairs: &[(&str, &str)]| -> HashMap<String, EndpointSettings> {
            pairs
                .iter()
                .map(|(name, ip)| {
                    let endpoint = EndpointSettings {
                        ip_address: Some((*ip).to_owned()),
                        ..Default::default()
                    };
                    ((*name).to_owned(), endpoint)
                })
                .collect()
        };
        type Networks<'a> = &'a [(&'a str, &'a str)];
        let table: [(Networks, Option<&str>); 5] = [
            (&[], None),
            (&[("flotilla-a-s1", "10.0.1.2")], Some("10.0.1.2")),
            (&[("flotilla", "10.0.0.2")], Some("10.0.0.2")),
            (
                &[("flotilla-a-s1", "10.0.1.2"), ("flotilla", "10.0.0.2")],
                Some("10.0.0.2"),
            ),
            (
                &[("flotilla", ""), ("flotilla-a-s1", "10.0.1.2")],
                Some("10.0.1.2"),
            ),
        ];
        for (networks, expected) in table {
            assert_eq!(
                address_on(on(networks), "flotilla").as_deref(),
                expected,
                "{networks:?}"
            );
        }
    }

    fn body(section: &str, stack: &str) -> HostConfig {
        let spec = ContainerSpec::parse(section).expect("valid");
        create_body(
            &spec,
            &VolumeNames::new(stack, []),
            HashMap::new(),
            "net-id",
            |_| false,
        )
        .host_config
        .expect("host config")
    }

    #[test]
    fn host_access_fields_and_volumes_reach_the_create_call() {
        let host = body(
            r#"{"image": "web", "privileged": true, "cap_add": ["CAP_NET_ADMIN"],
                "pid_mode": "host", "ipc_mode": "host", "devices": ["/dev/fuse:rw"],
                "security_opt": ["no-new-privileges"], "network_mode": "host",
                "volumes": ["/srv/data/../data/:/data:ro", "cache:/cache"]}"#,
            "mo-a-1-tk",
        );
        assert_eq!(host.privileged, Some(true));
        assert_eq!(host.cap_add, Some(vec!["NET_ADMIN".to_owned()]));
        assert_eq!(host.pid_mode.as_deref(), Some("host"));
        assert_eq!(host.ipc_mode.as_deref(), Some("host"));
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_owned()])
        );
        let device = &host.devices.expect("devices")[0];
        assert_eq!(device.path_on_host.as_deref(), Some("/dev/fuse"));
        assert_eq!(device.path_in_container.as_deref(), Some("/dev/fuse"));
        assert_eq!(device.cgroup_permissions.as_deref(), Some("rw"));
        assert_eq!(
            host.binds,
            Some(vec![
                "/srv/data:/data:ro".to_owned(),
                "flotilla-mo-a-1-tk-cache:/cache".to_owned()
            ])
        );
    }

    #[test]
    fn defaults_ask_for_nothing_and_join_the_agents_network() {
        let host = body(r#"{"image": "web"}"#, "mo-a-1-tk");
        assert_eq!(host.privileged, None);
        assert_eq!(host.cap_add, None);
        assert_eq!(host.pid_mode, None);
        assert_eq!(host.ipc_mode, None);
        assert_eq!(host.devices, None);
        assert_eq!(host.security_opt, None);
        assert_eq!(host.binds, None);
        assert_eq!(host.network_mode.as_deref(), Some("net-id"));
        let none = body(r#"{"image": "web", "network_mode": "none"}"#, "s");
        assert_eq!(none.network_mode.as_deref(), Some("none"));
    }
}
