//! Stack status from what is placed and reported. Pure, like placement.

use super::placement::Want;
use crate::store::{InstanceStatusRecord, StackStatus};
use flotilla_common::status::ContainerStatus;
use std::collections::HashMap;
use std::time::Duration;

/// What the status of one stack is derived from.
pub struct Observed<'a> {
    pub status: StackStatus,
    /// The latest version.
    pub version_id: &'a str,
    pub version_age: Duration,
    pub wants: &'a [Want],
    /// Agents assigned per flag.
    pub assigned: &'a HashMap<String, Vec<String>>,
    /// Latest fleet-link status per (agent id, flag).
    pub reports: &'a HashMap<(String, String), &'a InstanceStatusRecord>,
    /// Whether some agent may still run a container of this stack.
    pub still_held: bool,
    pub placement_timeout: Duration,
}

fn complete(status: StackStatus) -> StackStatus {
    match status {
        StackStatus::CreateInProgress | StackStatus::CreateFailed => StackStatus::CreateComplete,
        _ => StackStatus::UpdateComplete,
    }
}

fn failed(status: StackStatus) -> StackStatus {
    match status {
        StackStatus::CreateInProgress | StackStatus::CreateComplete => StackStatus::CreateFailed,
        _ => StackStatus::UpdateFailed,
    }
}

/// The status the stack should have (and why, for failures), or `None` to
/// leave it as it is.
pub fn next(o: &Observed<'_>) -> Option<(StackStatus, Option<String>)> {
    match o.status {
        StackStatus::DeleteInProgress => {
            let placed = o.assigned.values().any(|agents| !agents.is_empty());
            (!placed && !o.still_held).then_some((StackStatus::DeleteComplete, None))
        }
        StackStatus::DeleteComplete | StackStatus::DeleteFailed => None,
        StackStatus::CreateComplete | StackStatus::UpdateComplete => None,
        StackStatus::CreateInProgress
        | StackStatus::UpdateInProgress
        | StackStatus::CreateFailed
        | StackStatus::UpdateFailed => in_progress(o),
    }
}

fn in_progress(o: &Observed<'_>) -> Option<(StackStatus, Option<String>)> {
    let mut all_running = true;
    for want in o.wants {
        let assigned = o
            .assigned
            .get(&want.flag)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut running = 0;
        for agent in assigned {
            let Some(report) = o.reports.get(&(agent.clone(), want.flag.clone())) else {
                continue;
            };
            if report.version_id.as_deref() != Some(o.version_id) {
                continue;
            }
            match report.status.parse::<ContainerStatus>() {
                Ok(ContainerStatus::Running) => running += 1,
                Ok(status) if status.is_failure() => {
                    let reason = format!(
                        "{} on {}: {}{}",
                        want.flag,
                        report.instance_id,
                        status,
                        report
                            .reason
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    );
                    return Some((failed(o.status), Some(reason)));
                }
                _ => {}
            }
        }
        if running < want.count {
            all_running = false;
        }
        if assigned.len() < want.count && o.version_age >= o.placement_timeout {
            let reason = format!(
                "{} wants {} instance(s) but only {} eligible agent(s) could be placed",
                want.flag,
                want.count,
                assigned.len()
            );
            return Some((failed(o.status), Some(reason)));
        }
    }
    if all_running {
        return Some((complete(o.status), None));
    }
    None
}
