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
    /// The reason stored with the stack now.
    pub reason: Option<&'a str>,
    /// Stopped by its operator: a configuration is settled when its
    /// containers report `stopped` at the latest version.
    pub stopped: bool,
}

/// What every reason for a configuration short of agents contains, so a
/// stale one is cleared once the agents are there.
const SHORT_OF_AGENTS: &str = "connected agent in pool";

/// Why `want` has fewer agents than it asks for.
fn shortage(want: &Want, placed: usize) -> String {
    let kind = want
        .instance_type
        .as_deref()
        .map(|t| format!(" with instance_type {t}"))
        .unwrap_or_default();
    if placed == 0 {
        format!("{}: no {SHORT_OF_AGENTS} {}{kind}", want.flag, want.pool)
    } else {
        format!(
            "{}: {placed} of {} instance(s) placed, no other {SHORT_OF_AGENTS} {}{kind}",
            want.flag, want.count, want.pool
        )
    }
}

fn complete(status: StackStatus) -> StackStatus {
    match status {
        StackStatus::CreateInProgress | StackStatus::CreateFailed => StackStatus::CreateComplete,
        _ => StackStatus::UpdateComplete,
    }
}

fn failed(status: StackStatus) -> StackStatus {
    match status {
        StackStatus::CreateInProgress | StackStatus::CreateComplete | StackStatus::CreateFailed => {
            StackStatus::CreateFailed
        }
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
    let mut short: Option<String> = None;
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
                Ok(ContainerStatus::Running) if !o.stopped => running += 1,
                Ok(ContainerStatus::Stopped) if o.stopped => running += 1,
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
        if assigned.len() < want.count {
            let why = shortage(want, assigned.len());
            if o.version_age >= o.placement_timeout {
                return Some((failed(o.status), Some(why)));
            }
            short.get_or_insert(why);
        }
    }
    if all_running {
        return Some((complete(o.status), None));
    }
    let waiting = matches!(
        o.status,
        StackStatus::CreateInProgress | StackStatus::UpdateInProgress
    );
    match short {
        // An in-progress stack says what it waits for.
        Some(why) if waiting => Some((o.status, Some(why))),
        // The agents came: a stale "waiting for agents" goes.
        None if waiting && o.reason.is_some_and(|r| r.contains(SHORT_OF_AGENTS)) => {
            Some((o.status, None))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(agent: &str, flag: &str, version: &str, status: &str) -> InstanceStatusRecord {
        InstanceStatusRecord {
            stack_id: "s".into(),
            instance_id: format!("i-{agent}"),
            status: status.into(),
            flag: Some(flag.into()),
            exit_code: None,
            reason: Some("exit 1".into()),
            updated: String::new(),
            source: "quic".into(),
            version_id: Some(version.into()),
            agent_id: Some(agent.into()),
            commit: None,
        }
    }

    fn want(flag: &str, count: usize) -> Want {
        Want {
            stack_id: "s".into(),
            flag: flag.into(),
            count,
            instance_type: None,
            pool: "team-a".into(),
            bytes: 0,
        }
    }

    struct Case {
        status: StackStatus,
        wants: Vec<Want>,
        assigned: HashMap<String, Vec<String>>,
        reports: Vec<InstanceStatusRecord>,
        age: Duration,
        held: bool,
        reason: Option<&'static str>,
    }

    fn run(case: &Case) -> Option<(StackStatus, Option<String>)> {
        run_with(case, false)
    }

    fn run_with(case: &Case, stopped: bool) -> Option<(StackStatus, Option<String>)> {
        let reports: HashMap<(String, String), &InstanceStatusRecord> = case
            .reports
            .iter()
            .map(|r| {
                (
                    (
                        r.agent_id.clone().unwrap_or_default(),
                        r.flag.clone().unwrap_or_default(),
                    ),
                    r,
                )
            })
            .collect();
        next(&Observed {
            status: case.status,
            version_id: "v2",
            version_age: case.age,
            wants: &case.wants,
            assigned: &case.assigned,
            reports: &reports,
            still_held: case.held,
            placement_timeout: Duration::from_secs(60),
            reason: case.reason,
            stopped,
        })
    }

    fn assigned(pairs: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(f, a)| (f.to_string(), a.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn complete_only_when_every_configuration_runs_the_latest_version() {
        let mut case = Case {
            status: StackStatus::UpdateInProgress,
            wants: vec![want("web", 2), want("db", 1)],
            assigned: assigned(&[("web", &["a", "b"]), ("db", &["c"])]),
            reports: vec![
                report("a", "web", "v2", "running"),
                report("b", "web", "v1", "running"),
                report("c", "db", "v2", "running"),
            ],
            age: Duration::from_secs(1),
            held: true,
            reason: None,
        };
        assert_eq!(run(&case), None, "b still runs the old version");
        case.reports[1] = report("b", "web", "v2", "running");
        assert_eq!(run(&case), Some((StackStatus::UpdateComplete, None)));
        case.status = StackStatus::CreateInProgress;
        assert_eq!(run(&case), Some((StackStatus::CreateComplete, None)));
    }

    #[test]
    fn a_stopped_stack_settles_when_its_containers_are_stopped() {
        let mut case = Case {
            status: StackStatus::UpdateInProgress,
            wants: vec![want("web", 2)],
            assigned: assigned(&[("web", &["a", "b"])]),
            reports: vec![
                report("a", "web", "v2", "stopped"),
                report("b", "web", "v2", "running"),
            ],
            age: Duration::from_secs(1),
            held: true,
            reason: None,
        };
        assert_eq!(run_with(&case, true), None, "b still runs");
        case.reports[1] = report("b", "web", "v1", "stopped");
        assert_eq!(run_with(&case, true), None, "b stopped the old version");
        case.reports[1] = report("b", "web", "v2", "stopped");
        assert_eq!(
            run_with(&case, true),
            Some((StackStatus::UpdateComplete, None))
        );
        assert_eq!(run_with(&case, false), None, "started: stopped is not done");
    }

    #[test]
    fn a_failed_container_or_too_few_agents_fail_the_stack_with_a_reason() {
        let mut case = Case {
            status: StackStatus::CreateInProgress,
            wants: vec![want("web", 2)],
            assigned: assigned(&[("web", &["a", "b"])]),
            reports: vec![
                report("a", "web", "v2", "running"),
                report("b", "web", "v2", "app-crashed"),
            ],
            age: Duration::from_secs(1),
            held: true,
            reason: None,
        };
        let (status, reason) = run(&case).expect("failed");
        assert_eq!(status, StackStatus::CreateFailed);
        assert_eq!(reason.as_deref(), Some("web on i-b: app-crashed (exit 1)"));
        // A failure of an older version does not count.
        case.reports[1] = report("b", "web", "v1", "app-crashed");
        assert_eq!(run(&case), None);
        // Too few agents: say why while waiting, then fail at the
        // placement timeout.
        case.assigned = assigned(&[("web", &["a"])]);
        assert_eq!(
            run(&case),
            Some((
                StackStatus::CreateInProgress,
                Some(
                    "web: 1 of 2 instance(s) placed, no other connected agent in pool team-a"
                        .into()
                )
            ))
        );
        case.age = Duration::from_secs(61);
        let (status, reason) = run(&case).expect("failed");
        assert_eq!(status, StackStatus::CreateFailed);
        assert!(reason.is_some_and(|r| r.contains("1 of 2")));
        // Still failing: a failed create stays a failed create.
        case.status = StackStatus::CreateFailed;
        assert_eq!(run(&case).map(|(s, _)| s), Some(StackStatus::CreateFailed));
        // A failed stack recovers when it is satisfied later.
        case.assigned = assigned(&[("web", &["a", "b"])]);
        case.reports[1] = report("b", "web", "v2", "running");
        assert_eq!(run(&case), Some((StackStatus::CreateComplete, None)));
    }

    #[test]
    fn deletion_completes_when_nothing_is_placed_or_held() {
        let mut case = Case {
            status: StackStatus::DeleteInProgress,
            wants: vec![],
            assigned: assigned(&[]),
            reports: vec![],
            age: Duration::from_secs(1),
            held: true,
            reason: None,
        };
        assert_eq!(run(&case), None, "an agent may still run it");
        case.held = false;
        assert_eq!(run(&case), Some((StackStatus::DeleteComplete, None)));
        case.status = StackStatus::CreateComplete;
        assert_eq!(run(&case), None, "completed stacks stay as they are");
    }

    #[test]
    fn a_stack_short_of_agents_says_so_and_the_reason_goes_when_they_come() {
        let mut case = Case {
            status: StackStatus::UpdateInProgress,
            wants: vec![want("web", 1)],
            assigned: assigned(&[]),
            reports: vec![],
            age: Duration::from_secs(1),
            held: false,
            reason: None,
        };
        assert_eq!(
            run(&case),
            Some((
                StackStatus::UpdateInProgress,
                Some("web: no connected agent in pool team-a".into())
            ))
        );
        case.wants[0].instance_type = Some("t2.micro".into());
        assert!(run(&case)
            .and_then(|(_, r)| r)
            .is_some_and(|r| r.ends_with("in pool team-a with instance_type t2.micro")));
        // Placed, not running yet: the stale reason is cleared.
        case.assigned = assigned(&[("web", &["a"])]);
        case.reason = Some("web: no connected agent in pool team-a");
        assert_eq!(run(&case), Some((StackStatus::UpdateInProgress, None)));
        // Any other reason (a move off a drained agent) stays.
        case.reason = Some("moving web off i-1 is being drained");
        assert_eq!(run(&case), None);
    }
}
