//! Host facts for the controller (and operators): CPU, load, memory, disk,
//! uptime, from sysinfo.

use flotilla_common::wire::messages::HostFacts;
use std::path::Path;
use sysinfo::{Disks, System};

/// The agent's version, reported with the facts.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The machine's hostname, or `localhost` when it cannot be read.
pub fn hostname() -> String {
    System::host_name().unwrap_or_else(|| "localhost".into())
}

/// Reads the facts now. `data_dir` picks the disk reported (the one the
/// agent's state lives on).
pub fn collect(data_dir: &Path) -> HostFacts {
    let mut system = System::new();
    system.refresh_memory();
    let disks = Disks::new_with_refreshed_list();
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let disk = disks
        .list()
        .iter()
        .filter(|disk| dir.starts_with(disk.mount_point()))
        .max_by_key(|disk| disk.mount_point().as_os_str().len());
    HostFacts {
        hostname: hostname(),
        agent_version: AGENT_VERSION.into(),
        cpus: std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        load1: System::load_average().one,
        memory_total_bytes: system.total_memory(),
        memory_used_bytes: system.used_memory(),
        disk_total_bytes: disk.map_or(0, |d| d.total_space()),
        disk_free_bytes: disk.map_or(0, |d| d.available_space()),
        uptime_secs: System::uptime(),
    }
}
