//! What containers on a pool's agents may ask of their host.
//!
//! A pool's policy is default deny: a container may not bind host paths,
//! run privileged, add capabilities, share the host's network, PID or IPC
//! namespaces, map devices or change its security options unless the pool
//! allows it. The controller checks every configuration against its pool
//! at apply, and the agent checks again before it creates a container, so
//! a policy is enforced on the VM even if the controller let something
//! through.

use crate::spec::host::capability;
use crate::spec::limits::TEXT_LEN;
use crate::spec::volumes::{is_within, normalise_path};
use crate::spec::{ContainerSpec, NetworkMode, VolumeSource};
use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// A pool's container policy. Every field defaults to refusing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Host bind mounts are allowed only at or below these absolute paths.
    #[serde(default)]
    pub host_paths: Vec<String>,
    /// `privileged: true`.
    #[serde(default)]
    pub allow_privileged: bool,
    /// Capabilities that `cap_add` may name (`NET_ADMIN`, ...).
    #[serde(default)]
    pub allow_cap_add: Vec<String>,
    /// `network_mode: host`.
    #[serde(default)]
    pub allow_host_network: bool,
    /// `pid_mode: host` and `ipc_mode: host`.
    #[serde(default)]
    pub allow_host_pid_ipc: bool,
    /// `devices`.
    #[serde(default)]
    pub allow_devices: bool,
    /// `security_opt`.
    #[serde(default)]
    pub allow_security_opt: bool,
}

/// A thing a container asks for that its pool's policy forbids, or a
/// problem with a policy itself.
pub type Violation = crate::spec::Problem;

/// Every violation of `policy` by `spec`, each with its pointer within the
/// container section (`/volumes/1`, `/privileged`). Default deny: anything
/// asked for that the policy does not allow is listed. Named volumes are
/// always allowed: the agent scopes them to the stack.
pub fn check(spec: &ContainerSpec, policy: &Policy) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut deny = |path: String, message: String| found.push(Violation { path, message });
    let prefixes: Vec<String> = policy
        .host_paths
        .iter()
        .filter_map(|p| normalise_path(p))
        .collect();
    for (index, volume) in spec.volumes.iter().enumerate() {
        if let VolumeSource::HostPath(path) = &volume.source {
            if !prefixes.iter().any(|prefix| is_within(path, prefix)) {
                deny(
                    format!("/volumes/{index}"),
                    format!("host path {path} is not under a host path this pool allows"),
                );
            }
        }
    }
    let host = &spec.host;
    if host.privileged && !policy.allow_privileged {
        deny(
            "/privileged".into(),
            "this pool does not allow privileged containers".into(),
        );
    }
    let allowed: Vec<String> = policy
        .allow_cap_add
        .iter()
        .filter_map(|c| capability(c))
        .collect();
    for (index, cap) in host.cap_add.iter().enumerate() {
        if !allowed.contains(cap) {
            deny(
                format!("/cap_add/{index}"),
                format!("this pool does not allow adding capability {cap}"),
            );
        }
    }
    if host.network == NetworkMode::Host && !policy.allow_host_network {
        deny(
            "/network_mode".into(),
            "this pool does not allow the host's network".into(),
        );
    }
    for (asked, path, what) in [
        (host.host_pid, "/pid_mode", "PID"),
        (host.host_ipc, "/ipc_mode", "IPC"),
    ] {
        if asked && !policy.allow_host_pid_ipc {
            deny(
                path.into(),
                format!("this pool does not allow the host's {what} namespace"),
            );
        }
    }
    if !policy.allow_devices {
        for index in 0..host.devices.len() {
            deny(
                format!("/devices/{index}"),
                "this pool does not allow devices".into(),
            );
        }
    }
    if !policy.allow_security_opt {
        for index in 0..host.security_opt.len() {
            deny(
                format!("/security_opt/{index}"),
                "this pool does not allow security options".into(),
            );
        }
    }
    found
}

/// Most entries in a policy's lists.
const POLICY_LIST: usize = 64;

/// The most text a valid policy holds ([`Policy::text_bytes`]): what a
/// placement may carry besides its container section.
pub const MAX_POLICY_BYTES: usize = 2 * POLICY_LIST * TEXT_LEN;

impl Policy {
    /// The bytes of text in the policy's lists (a placement carries its
    /// pool's policy, so this counts towards the placement's size).
    pub fn text_bytes(&self) -> usize {
        self.host_paths
            .iter()
            .chain(&self.allow_cap_add)
            .map(String::len)
            .sum()
    }

    /// What is wrong with this policy, each with its pointer within it
    /// (`/host_paths/0`): host paths must be absolute, capabilities real.
    /// The pool API refuses a policy with problems.
    pub fn problems(&self) -> Vec<Violation> {
        let mut found = Vec::new();
        for (key, len) in [
            ("/host_paths", self.host_paths.len()),
            ("/allow_cap_add", self.allow_cap_add.len()),
        ] {
            if len > POLICY_LIST {
                found.push(Violation {
                    path: key.into(),
                    message: format!("must hold at most {POLICY_LIST} entries"),
                });
            }
        }
        for (index, path) in self.host_paths.iter().enumerate() {
            if path.chars().count() > TEXT_LEN
                || path.contains('\0')
                || normalise_path(path).is_none()
            {
                found.push(Violation {
                    path: format!("/host_paths/{index}"),
                    message: format!("{path:?} is not an absolute path"),
                });
            }
        }
        for (index, name) in self.allow_cap_add.iter().enumerate() {
            if capability(name).is_none() {
                found.push(Violation {
                    path: format!("/allow_cap_add/{index}"),
                    message: format!("{name:?} is not a Linux capability"),
                });
            }
        }
        found
    }
}
