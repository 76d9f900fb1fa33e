//! Container names and labels. Names are deterministic (agent, stack, flag
//! and a hash of the spec), so a container created just before a crash is
//! found again by name instead of being created twice, and two agents on
//! one engine never claim each other's containers.

use sha2::{Digest, Sha256};
use std::collections::HashMap;

pub const MANAGED: &str = "flotilla.managed";
pub const AGENT: &str = "flotilla.agent";
pub const STACK: &str = "flotilla.stack";
pub const FLAG: &str = "flotilla.flag";
pub const VERSION: &str = "flotilla.version";
pub const GENERATION: &str = "flotilla.generation";
pub const SPEC_HASH: &str = "flotilla.spec-hash";
pub const COMMIT: &str = "flotilla.commit";

/// Short hash of a spec's JSON text.
pub fn spec_hash(spec_json: &str) -> String {
    hex::encode(Sha256::digest(spec_json.as_bytes()))[..12].to_owned()
}

/// A name part with everything Docker does not allow in names replaced.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `flotilla-<agent>-<stack>-<flag>-<hash>`.
pub fn container_name(agent_id: &str, stack_id: &str, flag: &str, hash: &str) -> String {
    let name = format!(
        "flotilla-{}-{}-{}-{}",
        clean(agent_id),
        clean(stack_id),
        clean(flag),
        hash
    );
    name.trim_end_matches('-').to_owned()
}

/// `flotilla-<agent>-<stack>`: the stack's own network on this agent, so
/// containers of different stacks cannot reach each other.
pub fn network_name(agent_id: &str, stack_id: &str) -> String {
    format!("flotilla-{}-{}", clean(agent_id), clean(stack_id))
}

/// The labels of a stack's network: found again (and removed once unused)
/// after a restart by them.
pub fn network_labels(agent_id: &str, stack_id: &str) -> HashMap<String, String> {
    HashMap::from([
        (MANAGED.to_owned(), "true".to_owned()),
        (AGENT.to_owned(), agent_id.to_owned()),
        (STACK.to_owned(), stack_id.to_owned()),
    ])
}

/// The labels every managed container carries (user labels added after).
pub fn labels(
    agent_id: &str,
    stack_id: &str,
    flag: &str,
    version_id: &str,
    generation: u64,
    hash: &str,
) -> HashMap<String, String> {
    HashMap::from([
        (MANAGED.to_owned(), "true".to_owned()),
        (AGENT.to_owned(), agent_id.to_owned()),
        (STACK.to_owned(), stack_id.to_owned()),
        (FLAG.to_owned(), flag.to_owned()),
        (VERSION.to_owned(), version_id.to_owned()),
        (GENERATION.to_owned(), generation.to_string()),
        (SPEC_HASH.to_owned(), hash.to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_named_per_agent_and_stack() {
        let table = [
            (("a1", "s1"), "flotilla-a1-s1"),
            (("a1", "s2"), "flotilla-a1-s2"),
            (("a2", "s1"), "flotilla-a2-s1"),
            (("a/1", "s 1"), "flotilla-a_1-s_1"),
        ];
        for ((agent, stack), expected) in table {
            assert_eq!(network_name(agent, stack), expected);
        }
        assert_eq!(
            network_labels("a1", "s1").get(STACK).map(String::as_str),
            Some("s1")
        );
    }
}
