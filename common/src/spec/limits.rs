//! Bounds on everything the container section may hold.
//!
//! A template is written by an operator the agent does not trust, so every
//! count, length, duration and size has a ceiling: a value past it is a
//! clear problem at apply, never an allocation or a panic on the VM.

use std::time::Duration;

/// Longest image reference.
pub const IMAGE_LEN: usize = 512;
/// Longest ordinary string (paths, names, options).
pub const TEXT_LEN: usize = 4096;
/// Longest environment variable value.
pub const ENV_VALUE_LEN: usize = 32 * 1024;
/// Longest environment variable or label name.
pub const NAME_LEN: usize = 256;
/// Longest SSH key or `known_hosts` text.
pub const KEY_LEN: usize = 64 * 1024;
/// Most environment variables.
pub const ENV_COUNT: usize = 1024;
/// Most labels.
pub const LABEL_COUNT: usize = 256;
/// Most ports.
pub const PORT_COUNT: usize = 256;
/// Most volumes.
pub const VOLUME_COUNT: usize = 64;
/// Most command or entrypoint words.
pub const WORD_COUNT: usize = 1024;
/// Most `cap_add`, `devices` or `security_opt` entries.
pub const HOST_LIST_COUNT: usize = 64;
/// Most health check retries.
pub const RETRIES: u64 = 100;
/// Most restarts after failures.
pub const MAX_ATTEMPTS: u64 = 1000;
/// Most CPUs.
pub const CPUS: f64 = 1024.0;
/// Docker's smallest memory limit.
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;
/// Largest memory limit (4 TiB).
pub const MAX_MEMORY: u64 = 1 << 42;
/// Default stop grace period.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// How long a pre-stop hook is waited for when its `timeout` is not given.
pub const DEFAULT_PRE_STOP: Duration = Duration::from_secs(30);
/// Longest stop grace period (the Docker client's timeout is longer).
pub const MAX_GRACE: Duration = Duration::from_secs(600);
/// Shortest health check interval and timeout.
pub const MIN_PROBE: Duration = Duration::from_millis(100);
/// Longest health check interval, timeout and start period.
pub const MAX_PROBE: Duration = Duration::from_secs(3600);
/// Shortest `gitPoll`: a poll more often would only load the server.
pub const MIN_GIT_POLL: Duration = Duration::from_secs(1);
/// Longest `gitPoll`.
pub const MAX_GIT_POLL: Duration = Duration::from_secs(24 * 3600);
