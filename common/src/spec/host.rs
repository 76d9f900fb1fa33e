//! The fields that ask for host access: `privileged`, `cap_add`,
//! `network_mode`, `pid_mode`, `ipc_mode`, `devices`, `security_opt`.
//! A pool's policy decides whether they are allowed; here they are only
//! parsed and checked for form.

use super::fields::{boolean, string, token, Checker};
use super::limits::{HOST_LIST_COUNT, TEXT_LEN};
use super::volumes::normalise_path;
use serde_json::{Map, Value};

/// Linux capability names, without the `CAP_` prefix.
pub const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// `security_opt` keys Docker knows.
pub const SECURITY_OPTS: &[&str] = &[
    "apparmor",
    "label",
    "no-new-privileges",
    "seccomp",
    "systempaths",
    "writable-cgroups",
];

/// A capability name in one form (`NET_ADMIN`), from `NET_ADMIN`,
/// `CAP_NET_ADMIN` or lower case; `None` for anything that is not a Linux
/// capability (`ALL` included: name capabilities one by one).
pub fn capability(name: &str) -> Option<String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPABILITIES.contains(&bare).then(|| bare.to_owned())
}

/// How the container is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// The agent's bridge network (the default).
    #[default]
    Bridge,
    /// No network at all.
    None,
    /// The host's network namespace.
    Host,
}

/// A device mapped into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device on the host, below `/dev/`.
    pub host: String,
    /// Its path in the container (the host path when not given).
    pub container: String,
    /// cgroup permissions, some of `r`, `w`, `m`.
    pub permissions: String,
}

/// What a container asks of its host beyond its own sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostAccess {
    /// `privileged: true`.
    pub privileged: bool,
    /// Added capabilities, normalised (`NET_ADMIN`), in template order.
    pub cap_add: Vec<String>,
    /// `network_mode`.
    pub network: NetworkMode,
    /// `pid_mode: host`.
    pub host_pid: bool,
    /// `ipc_mode: host`.
    pub host_ipc: bool,
    /// `devices`.
    pub devices: Vec<Device>,
    /// `security_opt`, as given.
    pub security_opt: Vec<String>,
}

impl HostAccess {
    /// Whether the container uses a network of the agent's (and so may
    /// publish ports and be probed over HTTP).
    pub fn bridged(&self) -> bool {
        self.network == NetworkMode::Bridge
    }
}

/// Parses the host-access fields of the container section.
pub(crate) fn host_access(check: &mut Checker, section: &Map<String, Value>) -> HostAccess {
    HostAccess {
        privileged: check
            .optional(section, "", "privileged", boolean)
            .unwrap_or(false),
        cap_add: check.list(section, "", "cap_add", HOST_LIST_COUNT, |value| {
            let name = token(value, 64)?;
            capability(name).ok_or_else(|| format!("{name:?} is not a Linux capability"))
        }),
        network: check
            .optional(section, "", "network_mode", network_mode)
            .unwrap_or_default(),
        host_pid: check
            .optional(section, "", "pid_mode", host_only)
            .unwrap_or(false),
        host_ipc: check
            .optional(section, "", "ipc_mode", host_only)
            .unwrap_or(false),
        devices: check.list(section, "", "devices", HOST_LIST_COUNT, device),
        security_opt: check.list(section, "", "security_opt", HOST_LIST_COUNT, security_opt),
    }
}

fn network_mode(value: &Value) -> Result<NetworkMode, String> {
    match token(value, 16)? {
        "bridge" => Ok(NetworkMode::Bridge),
        "none" => Ok(NetworkMode::None),
        "host" => Ok(NetworkMode::Host),
        other => Err(format!("{other:?} is not bridge, none or host")),
    }
}

fn host_only(value: &Value) -> Result<bool, String> {
    match token(value, 16)? {
        "host" => Ok(true),
        other => Err(format!(
            "{other:?} is not \"host\" (the only value accepted)"
        )),
    }
}

/// `/dev/host[:/dev/container[:rwm]]` (or `/dev/host:rwm`).
fn device(value: &Value) -> Result<Device, String> {
    let text = token(value, TEXT_LEN)?;
    let bad = || format!("{text:?} is not \"/dev/host[:/container/path[:rwm]]\"");
    let permissions_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 3
            && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
            && p.chars().enumerate().all(|(i, c)| !p[..i].contains(c))
    };
    let (host, container, permissions) = match text.split(':').collect::<Vec<_>>().as_slice() {
        [host] => (*host, *host, "rwm"),
        [host, perms] if permissions_ok(perms) => (*host, *host, *perms),
        [host, container] => (*host, *container, "rwm"),
        [host, container, perms] if permissions_ok(perms) => (*host, *container, *perms),
        _ => return Err(bad()),
    };
    let host = normalise_path(host)
        .filter(|h| h.starts_with("/dev/"))
        .ok_or_else(|| format!("{text:?}: the host device must be below /dev/"))?;
    let container = normalise_path(container)
        .filter(|c| c != "/")
        .ok_or_else(bad)?;
    Ok(Device {
        host,
        container,
        permissions: permissions.to_owned(),
    })
}

/// `name`, `name=value` or `name:value` with a name Docker knows.
fn security_opt(value: &Value) -> Result<String, String> {
    let text = string(value, TEXT_LEN)?;
    let name = text.split(['=', ':']).next().unwrap_or_default();
    if !SECURITY_OPTS.contains(&name) {
        return Err(format!(
            "{name:?} is not a security option ({})",
            SECURITY_OPTS.join(", ")
        ));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn capabilities_are_normalised() {
        for (name, want) in [
            ("NET_ADMIN", Some("NET_ADMIN")),
            ("CAP_NET_ADMIN", Some("NET_ADMIN")),
            ("cap_sys_time", Some("SYS_TIME")),
            ("ALL", None),
            ("CAP_", None),
            ("NET_ADMIN; rm -rf", None),
            ("", None),
        ] {
            assert_eq!(capability(name).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn devices() {
        let dev = |h: &str, c: &str, p: &str| Device {
            host: h.into(),
            container: c.into(),
            permissions: p.into(),
        };
        for (value, want) in [
            (
                json!("/dev/fuse"),
                Some(dev("/dev/fuse", "/dev/fuse", "rwm")),
            ),
            (
                json!("/dev/fuse:r"),
                Some(dev("/dev/fuse", "/dev/fuse", "r")),
            ),
            (
                json!("/dev/sda:/dev/xvda"),
                Some(dev("/dev/sda", "/dev/xvda", "rwm")),
            ),
            (
                json!("/dev/sda:/dev/xvda:rw"),
                Some(dev("/dev/sda", "/dev/xvda", "rw")),
            ),
            (json!("/dev/../etc/shadow"), None),
            (json!("/etc/shadow"), None),
            (json!("/dev/sda:/dev/xvda:rx"), None),
            (json!("/dev/sda:/dev/xvda:rr"), None),
            (json!("/dev/sda:relative"), None),
            (json!("sda"), None),
        ] {
            assert_eq!(device(&value).ok(), want, "{value}");
        }
    }

    #[test]
    fn modes_and_options() {
        assert_eq!(network_mode(&json!("host")), Ok(NetworkMode::Host));
        assert!(network_mode(&json!("container:x")).is_err());
        assert_eq!(host_only(&json!("host")), Ok(true));
        assert!(host_only(&json!("private")).is_err());
        assert!(security_opt(&json!("no-new-privileges")).is_ok());
        assert!(security_opt(&json!("seccomp=unconfined")).is_ok());
        assert!(security_opt(&json!("label:disable")).is_ok());
        assert!(security_opt(&json!("rootless")).is_err());
    }
}
