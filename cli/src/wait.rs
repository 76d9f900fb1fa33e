//! `--wait`: follows a stack until it settles (`*_COMPLETE`, `*_FAILED`,
//! `DELETE_COMPLETE`), showing each configuration's instances as they
//! report. On a terminal: a live display (one line per instance and one for
//! the stack); otherwise: a plain line per change, for logs and CI.

use crate::client::{CallError, Client};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often the stack is read.
const POLL: Duration = Duration::from_millis(500);

/// Why waiting ended without success.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("stack {stack_id} is {status}: {reason}")]
    Failed {
        stack_id: String,
        status: String,
        reason: String,
    },
    #[error("stack {stack_id} still {status} after {waited:?}")]
    TimedOut {
        stack_id: String,
        status: String,
        waited: Duration,
    },
    #[error("task {task_id} ({operation}) FAILED: {reason}")]
    TaskFailed {
        task_id: String,
        operation: String,
        reason: String,
    },
    #[error("task {task_id} still PENDING after {waited:?}")]
    TaskTimedOut { task_id: String, waited: Duration },
    #[error(transparent)]
    Call(#[from] CallError),
}

/// Follows a task until it is no longer `PENDING`: the stack settling is
/// not enough, as a later version may have superseded this one. A FAILED
/// task is an error with its reason.
pub async fn task(client: &Client, task_id: &str, timeout: Duration) -> Result<Value, WaitError> {
    let started = Instant::now();
    loop {
        let task = client.get(&format!("/v3/tasks/{task_id}")).await?;
        match task["taskStatus"].as_str() {
            Some("SUCCESS") => return Ok(task),
            Some("FAILED") => {
                return Err(WaitError::TaskFailed {
                    task_id: task_id.to_owned(),
                    operation: task["operation"].as_str().unwrap_or("-").to_owned(),
                    reason: task["reason"]
                        .as_str()
                        .unwrap_or("no reason given")
                        .to_owned(),
                })
            }
            _ if started.elapsed() >= timeout => {
                return Err(WaitError::TaskTimedOut {
                    task_id: task_id.to_owned(),
                    waited: timeout,
                })
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

/// Whether a status is final.
pub fn settled(status: &str) -> bool {
    status.ends_with("_COMPLETE") || status.ends_with("_FAILED")
}

/// What the display shows.
trait Display {
    fn stack(&mut self, status: &str);
    fn instance(&mut self, key: &str, status: &str);
    fn finish(&mut self);
}

struct Lines {
    last: BTreeMap<String, String>,
}

impl Display for Lines {
    fn stack(&mut self, status: &str) {
        if self.last.get("") != Some(&status.to_owned()) {
            println!("stack: {status}");
            self.last.insert(String::new(), status.to_owned());
        }
    }
    fn instance(&mut self, key: &str, status: &str) {
        if self.last.get(key) != Some(&status.to_owned()) {
            println!("  {key}: {status}");
            self.last.insert(key.to_owned(), status.to_owned());
        }
    }
    fn finish(&mut self) {}
}

struct Live {
    multi: MultiProgress,
    stack: ProgressBar,
    bars: BTreeMap<String, ProgressBar>,
    style: ProgressStyle,
}

impl Live {
    fn new() -> Live {
        let style = ProgressStyle::with_template("{spinner} {prefix:<32} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let multi = MultiProgress::new();
        let stack = multi.add(ProgressBar::new_spinner());
        stack.set_style(style.clone());
        stack.set_prefix("stack");
        stack.enable_steady_tick(Duration::from_millis(120));
        Live {
            multi,
            stack,
            bars: BTreeMap::new(),
            style,
        }
    }
}

impl Display for Live {
    fn stack(&mut self, status: &str) {
        self.stack.set_message(status.to_owned());
    }
    fn instance(&mut self, key: &str, status: &str) {
        let bar = self.bars.entry(key.to_owned()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(self.style.clone());
            bar.set_prefix(key.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        bar.set_message(status.to_owned());
        if status == "running" || status == "terminated" {
            bar.finish();
        }
    }
    fn finish(&mut self) {
        for bar in self.bars.values() {
            bar.finish();
        }
        self.stack.finish();
    }
}

/// Follows `stack_id` until it settles or `timeout` passes; returns the
/// final stack. A `*_FAILED` end is an error carrying the reason.
pub async fn until_settled(
    client: &Client,
    stack_id: &str,
    timeout: Duration,
) -> Result<Value, WaitError> {
    let mut display: Box<dyn Display> = if std::io::stdout().is_terminal() {
        Box::new(Live::new())
    } else {
        Box::new(Lines {
            last: BTreeMap::new(),
        })
    };
    let started = Instant::now();
    loop {
        let stack = client.get(&format!("/v3/alm/stack/{stack_id}")).await?;
        let status = stack["stack_status"]
            .as_str()
            .unwrap_or("UNKNOWN")
            .to_owned();
        let version = stack["version_id"].as_str().unwrap_or_default();
        let instances = match client
            .get(&format!("/v3/alm/stack/{stack_id}/containers"))
            .await
        {
            Ok(Value::Array(instances)) => instances,
            _ => Vec::new(),
        };
        let configurations = stack["configuration"]["configurations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for configuration in &configurations {
            let flag = configuration["flag"].as_str().unwrap_or("-");
            let wanted = configuration["provision"]["instance_count"]
                .as_u64()
                .unwrap_or(0);
            let running = instances
                .iter()
                .filter(|i| {
                    i["flag"].as_str() == Some(flag)
                        && i["status"] == "running"
                        && i["version_id"].as_str().is_none_or(|v| v == version)
                })
                .count();
            display.instance(flag, &format!("{running}/{wanted} running"));
        }
        {
            for instance in &instances {
                let key = format!(
                    "  {} on {}",
                    instance["flag"].as_str().unwrap_or("-"),
                    instance["instance_id"].as_str().unwrap_or("-")
                );
                display.instance(&key, instance["status"].as_str().unwrap_or("-"));
            }
        }
        display.stack(&status);
        if settled(&status) {
            display.finish();
            if status.ends_with("_FAILED") {
                return Err(WaitError::Failed {
                    stack_id: stack_id.to_owned(),
                    reason: stack["stack_status_reason"]
                        .as_str()
                        .unwrap_or("no reason given")
                        .to_owned(),
                    status,
                });
            }
            return Ok(stack);
        }
        if started.elapsed() >= timeout {
            display.finish();
            return Err(WaitError::TimedOut {
                stack_id: stack_id.to_owned(),
                status,
                waited: timeout,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}
