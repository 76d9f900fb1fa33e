//! The template's `container` section, parsed and checked: the one parser
//! the controller validates templates with at apply and the agent runs
//! before it creates a container, so what the controller accepts is what
//! every agent can run.
//!
//! [`ContainerSpec::from_value`] reports every problem with its JSON
//! pointer relative to the section (`/ports/0`, `/stop_grace_period`);
//! [`ContainerSpec::parse`] joins them into one sentence for a
//! `start-failure` reason. Every count, length, duration and size is
//! bounded ([`limits`]), and no input makes the parser panic.
//!
//! # Layout
//! - [`fields`]: reading JSON values with problems collected.
//! - [`units`]: durations and sizes. [`ports`], [`volumes`], [`health`],
//!   [`pre_stop`], [`git`], [`image`] (and registry credentials): one
//!   field family each.
//! - [`host`]: the fields that ask for host access, which a pool's
//!   [`crate::policy::Policy`] governs.

pub mod fields;
pub mod git;
pub mod health;
pub mod host;
pub mod image;
pub mod limits;
pub mod ports;
pub mod pre_stop;
mod restart;
mod units;
pub mod volumes;

#[cfg(test)]
mod tests;

pub use git::Git;
pub use health::{Health, Probe};
pub use host::{Device, HostAccess, NetworkMode};
pub use image::{registry_of, Registry};
pub use limits::{DEFAULT_GRACE, DEFAULT_PRE_STOP, MAX_GRACE};
pub use ports::Port;
pub use pre_stop::PreStop;
pub use restart::{PullPolicy, Restart};
pub use volumes::{Volume, VolumeSource};

use fields::{get, object, string, Checker};
use limits::{CPUS, ENV_COUNT, ENV_VALUE_LEN, LABEL_COUNT, MAX_MEMORY, MIN_MEMORY, NAME_LEN};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// One thing wrong with a container section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON pointer (RFC 6901) within the container section, `""` for the
    /// section itself.
    pub path: String,
    /// What is wrong, in a sentence that never repeats a secret.
    pub message: String,
}

/// A checked container spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// The image reference.
    pub image: String,
    /// Replaces the image's command.
    pub command: Option<Vec<String>>,
    /// Replaces the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// `NAME=value`, sorted by name.
    pub env: Vec<String>,
    /// Names of environment variables whose values are secrets: the
    /// controller shows them as `[redacted]` to operators (describe,
    /// config vars, the CLI) and never logs them; agents still get them.
    pub secret_variables: Vec<String>,
    /// Exposed and published ports.
    pub ports: Vec<Port>,
    /// Host binds and named volumes, in template order.
    pub volumes: Vec<Volume>,
    /// The operator's labels (never `flotilla.*`).
    pub labels: BTreeMap<String, String>,
    /// What happens after the container exits.
    pub restart: Restart,
    /// Memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// Time between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// The health check, if any.
    pub health: Option<Health>,
    /// What runs before SIGTERM on every stop, if anything.
    pub pre_stop: Option<PreStop>,
    /// Credentials for the pull.
    pub registry: Option<Registry>,
    /// When to pull.
    pub pull: PullPolicy,
    /// Code deployed from git into the container's code directory.
    pub git: Option<Git>,
    /// Where the code is mounted (`codeDir`); when absent, the image's
    /// `com.mobingi.code_dir` label, else `/var/www/html`.
    pub code_dir: Option<String>,
    /// Privileges, capabilities, namespaces, devices and security options.
    pub host: HostAccess,
}

impl ContainerSpec {
    /// Parses and checks a container section; every problem is listed.
    pub fn from_value(value: &Value) -> Result<ContainerSpec, Vec<Problem>> {
        let mut check = Checker::default();
        let spec = section(&mut check, value);
        match spec {
            Some(spec) if check.problems.is_empty() => Ok(spec),
            _ => Err(check.problems),
        }
    }

    /// Parses and checks the section's JSON text; the problems, if any, in
    /// one sentence (the agent's `start-failure` reason).
    pub fn parse(json: &str) -> Result<ContainerSpec, String> {
        let value: Value =
            serde_json::from_str(json).map_err(|err| format!("container section: {err}"))?;
        ContainerSpec::from_value(&value).map_err(|problems| sentence(&problems))
    }
}

/// Problems as one sentence: `container section: /ports/0 "abc" ...; ...`.
pub fn sentence(problems: &[Problem]) -> String {
    let parts: Vec<String> = problems
        .iter()
        .map(|p| match p.path.as_str() {
            "" => p.message.clone(),
            path => format!("{path}: {}", p.message),
        })
        .collect();
    format!("container section: {}", parts.join("; "))
}

fn section(check: &mut Checker, value: &Value) -> Option<ContainerSpec> {
    let section = check.take("", object(value, 256))?;
    let image = match get(section, "image") {
        None => {
            check.report("/image", "image is required");
            None
        }
        Some(_) => check.optional(section, "", "image", image::image),
    };
    let command = check.optional(section, "", "command", fields::words);
    let entrypoint = check.optional(section, "", "entrypoint", fields::words);
    let env = environment(check, section);
    let secret_variables = check.list(section, "", "secret_variables", ENV_COUNT, |value| {
        match value.as_str() {
            Some(name) if env_name_ok(name) => Ok(name.to_owned()),
            _ => Err("must be an environment variable name (letters, digits and '_', not starting with a digit, at most 256)".into()),
        }
    });
    let host = host::host_access(check, section);
    let bridged = host.bridged();
    let ports = check.list(section, "", "ports", limits::PORT_COUNT, |value| {
        let port = ports::port(value)?;
        if !bridged && port.host_port.is_some() {
            return Err("publishes a host port, which network_mode host or none cannot".into());
        }
        Ok(port)
    });
    let volumes = check.list(
        section,
        "",
        "volumes",
        limits::VOLUME_COUNT,
        volumes::volume,
    );
    let labels = labels(check, section);
    let restart = check
        .optional(section, "", "restart", restart::restart)
        .unwrap_or(Restart::Always);
    let memory_bytes = check.optional(section, "", "memory", |v| {
        units::size(v, MIN_MEMORY, MAX_MEMORY).map(|b| i64::try_from(b).unwrap_or(i64::MAX))
    });
    let nano_cpus = check.optional(section, "", "cpus", |v| match v.as_f64() {
        Some(cpus) if cpus.is_finite() && cpus > 0.0 && cpus <= CPUS => Ok((cpus * 1e9) as i64),
        _ => Err(format!("must be a CPU count above 0, at most {CPUS}")),
    });
    let stop_grace = check
        .optional(section, "", "stop_grace_period", |v| {
            units::duration(v, Duration::ZERO, MAX_GRACE)
        })
        .unwrap_or(DEFAULT_GRACE);
    let health = get(section, "health_check")
        .and_then(|value| health::health(check, value, "/health_check"));
    if !bridged
        && matches!(
            &health,
            Some(Health {
                probe: Probe::Http { .. },
                ..
            })
        )
    {
        check.report(
            "/health_check/http",
            "an HTTP probe needs network_mode bridge; use a command probe",
        );
    }
    let pre_stop =
        get(section, "pre_stop").and_then(|value| pre_stop::pre_stop(check, value, "/pre_stop"));
    if !bridged
        && matches!(
            &pre_stop,
            Some(PreStop {
                action: Probe::Http { .. },
                ..
            })
        )
    {
        check.report(
            "/pre_stop/http",
            "an HTTP pre-stop hook needs network_mode bridge; use exec",
        );
    }
    let registry = get(section, "registry")
        .and_then(|value| image::registry(check, value, "/registry", image.as_deref()));
    let pull = check
        .optional(section, "", "pull_policy", restart::pull_policy)
        .unwrap_or(PullPolicy::IfNotPresent);
    let git = git::git(check, section);
    let code_dir = git::code_dir(check, section);
    Some(ContainerSpec {
        image: image?,
        command,
        entrypoint,
        env,
        secret_variables,
        ports,
        volumes,
        labels,
        restart,
        memory_bytes,
        nano_cpus,
        stop_grace,
        health,
        pre_stop,
        registry,
        pull,
        git,
        code_dir,
        host,
    })
}

/// Whether `name` may name an environment variable: letters, digits and
/// `_`, not starting with a digit, at most 256 bytes.
pub fn env_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= NAME_LEN
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `environment_variables` as `NAME=value`, sorted by name.
fn environment(check: &mut Checker, section: &serde_json::Map<String, Value>) -> Vec<String> {
    let Some(vars) = get(section, "environment_variables") else {
        return Vec::new();
    };
    let Some(vars) = check.take("/environment_variables", object(vars, ENV_COUNT)) else {
        return Vec::new();
    };
    let mut env: Vec<String> = vars
        .iter()
        .filter_map(|(name, value)| {
            let path = format!("/environment_variables/{}", fields::segment(name));
            if !env_name_ok(name) {
                check.report(&path, "is not a valid environment variable name (letters, digits and '_', not starting with a digit, at most 256)");
                return None;
            }
            let value = match value {
                Value::String(_) => string(value, ENV_VALUE_LEN).map(str::to_owned),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                other => Err(format!(
                    "must be a string, number or boolean, not {}",
                    fields::kind(other)
                )),
            };
            check.take(&path, value).map(|value| format!("{name}={value}"))
        })
        .collect();
    env.sort();
    env
}

/// `labels`, none of them `flotilla.*`.
fn labels(
    check: &mut Checker,
    section: &serde_json::Map<String, Value>,
) -> BTreeMap<String, String> {
    let Some(labels) = get(section, "labels") else {
        return BTreeMap::new();
    };
    let Some(labels) = check.take("/labels", object(labels, LABEL_COUNT)) else {
        return BTreeMap::new();
    };
    labels
        .iter()
        .filter_map(|(key, value)| {
            let path = format!("/labels/{}", fields::segment(key));
            let checked = if key.is_empty() || key.chars().count() > NAME_LEN || key.contains('\0')
            {
                Err(format!("a label name must be 1 to {NAME_LEN} characters"))
            } else if key.starts_with("flotilla.") {
                Err("is reserved (flotilla.* labels are the agent's)".into())
            } else {
                string(value, limits::TEXT_LEN).map(|v| (key.clone(), v.to_owned()))
            };
            check.take(&path, checked)
        })
        .collect()
}
