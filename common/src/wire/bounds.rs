//! Bounds on what an agent says about itself. Labels and facts are stored
//! with the agent's record and shown to every operator, so an agent (or a
//! stolen identity) must not be able to make them arbitrarily large: past
//! a bound the session is refused with [`super::codes::LIMIT_EXCEEDED`].

use super::messages::{Hello, HostFacts};

/// At most this many labels.
pub const MAX_LABELS: usize = 64;
/// A label key is 1 to this many characters (as a DNS label).
pub const MAX_LABEL_KEY: usize = 63;
/// A label value is at most this many characters.
pub const MAX_LABEL_VALUE: usize = 256;
/// A hostname is at most this many characters (as a DNS name).
pub const MAX_HOSTNAME: usize = 253;
/// An agent version string is at most this many characters.
pub const MAX_VERSION: usize = 64;

/// Most placements in one agent's desired state. The agent refuses a
/// generation announcing more; the scheduler places no more on one agent.
pub const MAX_DESIRED_PARTS: u32 = 1024;
/// Most bytes of text ([`super::messages::Placement::text_bytes`]) in one
/// agent's desired state: what the agent holds in memory while assembling
/// a generation. The scheduler places no more on one agent.
pub const MAX_DESIRED_BYTES: usize = 64 * 1024 * 1024;
/// What one placement's frame may need besides its container section
/// (ids, stack token, pool, the pool's policy at its largest, encoding):
/// the frame cap must leave this much above the container-section cap, so
/// every placement accepted at apply fits in one frame.
pub const PLACEMENT_OVERHEAD: usize = crate::policy::MAX_POLICY_BYTES + 64 * 1024;

/// What a part's frame needs beyond its placement's text (length
/// prefixes, tags, numbers): a placement of at most the frame cap less
/// this always fits in one frame.
pub const FRAME_SLACK: usize = 4 * 1024;

/// Which bound a hello or heartbeat broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundsError {
    #[error("{count} labels; at most {MAX_LABELS} are allowed")]
    TooManyLabels { count: usize },
    #[error("a label key of {len} characters; keys are 1 to {MAX_LABEL_KEY}")]
    LabelKey { len: usize },
    #[error("label {key:?} has a value of {len} characters; at most {MAX_LABEL_VALUE}")]
    LabelValue { key: String, len: usize },
    #[error("{field} of {len} characters; at most {max}")]
    Fact {
        field: &'static str,
        len: usize,
        max: usize,
    },
}

/// Checks a hello's labels and facts against the bounds.
pub fn check_hello(hello: &Hello) -> Result<(), BoundsError> {
    if hello.labels.len() > MAX_LABELS {
        return Err(BoundsError::TooManyLabels {
            count: hello.labels.len(),
        });
    }
    for (key, value) in &hello.labels {
        let len = key.chars().count();
        if !(1..=MAX_LABEL_KEY).contains(&len) {
            return Err(BoundsError::LabelKey { len });
        }
        let len = value.chars().count();
        if len > MAX_LABEL_VALUE {
            return Err(BoundsError::LabelValue {
                key: key.chars().take(MAX_LABEL_KEY).collect(),
                len,
            });
        }
    }
    text("agent_version", &hello.agent_version, MAX_VERSION)?;
    check_facts(&hello.facts)
}

/// Checks host facts (in a hello or a heartbeat) against the bounds.
pub fn check_facts(facts: &HostFacts) -> Result<(), BoundsError> {
    text("hostname", &facts.hostname, MAX_HOSTNAME)?;
    text("agent_version", &facts.agent_version, MAX_VERSION)
}

fn text(field: &'static str, value: &str, max: usize) -> Result<(), BoundsError> {
    let len = value.chars().count();
    if len > max {
        return Err(BoundsError::Fact { field, len, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn hello(labels: &[(String, String)], hostname: &str) -> Hello {
        Hello {
            agent_version: "0.1.0".into(),
            labels: labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            generation: 0,
            facts: HostFacts {
                hostname: hostname.into(),
                ..Default::default()
            },
        }
    }

    fn label(key: &str, value: &str) -> (String, String) {
        (key.to_owned(), value.to_owned())
    }

    #[test]
    fn bounds() {
        let many: Vec<(String, String)> = (0..=MAX_LABELS)
            .map(|i| label(&format!("k{i}"), "v"))
            .collect();
        let table: Vec<(Hello, Result<(), BoundsError>)> = vec![
            (hello(&[label("zone", "a")], "h"), Ok(())),
            (hello(&many[..MAX_LABELS], "h"), Ok(())),
            (
                hello(&many, "h"),
                Err(BoundsError::TooManyLabels {
                    count: MAX_LABELS + 1,
                }),
            ),
            (hello(&[label(&"k".repeat(63), "v")], "h"), Ok(())),
            (
                hello(&[label(&"k".repeat(64), "v")], "h"),
                Err(BoundsError::LabelKey { len: 64 }),
            ),
            (
                hello(&[label("", "v")], "h"),
                Err(BoundsError::LabelKey { len: 0 }),
            ),
            (hello(&[label("k", &"v".repeat(256))], "h"), Ok(())),
            (
                hello(&[label("k", &"é".repeat(257))], "h"),
                Err(BoundsError::LabelValue {
                    key: "k".into(),
                    len: 257,
                }),
            ),
            (
                hello(&[], &"h".repeat(254)),
                Err(BoundsError::Fact {
                    field: "hostname",
                    len: 254,
                    max: MAX_HOSTNAME,
                }),
            ),
        ];
        for (hello, want) in table {
            assert_eq!(check_hello(&hello), want, "{:?}", hello.labels.len());
        }
    }
}
