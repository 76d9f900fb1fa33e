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

/// `s` with every character Docker refuses in a name replaced by `_`.
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

/// The Docker volume a stack's named volume `name` is: `flotilla-<stack>-<name>`,
/// so two stacks that use the same name never share one. The parser has
/// checked `name` against Docker's volume-name rules already; cleaning
/// again keeps the result valid whatever it is given. Stack ids have one
/// shape (`mo-<user>-<random>-tk`), so where the stack ends is never in
/// doubt.
pub fn volume_name(stack_id: &str, name: &str) -> String {
    format!("flotilla-{}-{}", clean(stack_id), clean(name))
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
    fn volume_names_are_per_stack_and_valid() {
        for (stack, name, want) in [
            ("mo-abc-123-tk", "data", "flotilla-mo-abc-123-tk-data"),
            ("mo-def-456-tk", "data", "flotilla-mo-def-456-tk-data"),
            ("odd/stack id", "cache.v1", "flotilla-odd_stack_id-cache.v1"),
        ] {
            let volume = volume_name(stack, name);
            assert_eq!(volume, want);
            assert!(flotilla_common::spec::volumes::is_volume_name(
                &volume[..volume.len().min(64)]
            ));
        }
    }
}
