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

/// `flotilla-<agent>-<stack>-<flag>-<hash>`.
pub fn container_name(agent_id: &str, stack_id: &str, flag: &str, hash: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let name = format!(
        "flotilla-{}-{}-{}-{}",
        clean(agent_id),
        clean(stack_id),
        clean(flag),
        hash
    );
    name.trim_end_matches('-').to_owned()
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
