//! What containers on a pool's agents may ask of their host.
//!
//! A pool's policy is default deny: a container may not bind host paths,
//! run privileged, add capabilities, share the host's network, PID or IPC
//! namespaces, map devices or change its security options unless the pool
//! allows it. The controller checks every configuration against its pool
//! at apply, and the agent checks again before it creates a container, so
//! a policy is enforced on the VM even if the controller let something
//! through.

use serde::{Deserialize, Serialize};

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
