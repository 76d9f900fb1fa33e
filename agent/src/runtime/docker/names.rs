//! Container names and labels. Names are deterministic (agent, stack, flag
//! and a hash of the spec), so a container created just before a crash is
//! found again by name instead of being created twice, and two agents on
//! one engine never claim each other's containers.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

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

/// The Docker volume a stack's named volume `name` is: `flotilla-<stack>-<name>`,
/// so two stacks that use the same name never share one. The parser has
/// checked `name` against Docker's volume-name rules already; cleaning
/// again keeps the result valid whatever it is given. Stack ids have one
/// shape (`mo-<user>-<random>-tk`), so where the stack ends is never in
/// doubt.
pub fn volume_name(stack_id: &str, name: &str) -> String {
    format!("flotilla-{}-{}", clean(stack_id), clean(name))
}

/// How one stack's named volumes are called on this engine: the stack's
/// own `flotilla-<stack_id>-<name>`, except a volume the stack's existing
/// containers already mount under its bare name (created before volumes
/// were per stack), which keeps that name so an upgrade loses no data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeNames {
    stack_id: String,
    legacy: HashSet<String>,
    scoped: bool,
}

impl VolumeNames {
    /// The names for `stack_id`, given the volume names its existing
    /// containers mount.
    pub fn new<'a>(stack_id: &str, mounted: impl IntoIterator<Item = &'a str>) -> VolumeNames {
        let own = format!("flotilla-{}-", clean(stack_id));
        VolumeNames {
            stack_id: stack_id.to_owned(),
            legacy: mounted
                .into_iter()
                .filter(|name| !name.starts_with(&own))
                .map(str::to_owned)
                .collect(),
            scoped: true,
        }
    }

    /// `scoped: false` for a stack created before volumes were per stack
    /// (the controller says so in the placement): every volume keeps its
    /// bare name.
    pub fn scoped(mut self, scoped: bool) -> VolumeNames {
        self.scoped = scoped;
        self
    }

    /// The Docker volume the template's named volume `name` is.
    pub fn of(&self, name: &str) -> String {
        if !self.scoped || self.legacy.contains(name) {
            name.to_owned()
        } else {
            volume_name(&self.stack_id, name)
        }
    }
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

    #[test]
    fn volume_names_are_per_stack_and_valid() {
        for (stack, name, want) in [
            ("mo-abc-123-tk", "data", "flotilla-mo-abc-123-tk-data"),
            ("mo-def-456-tk", "data", "flotilla-mo-def-456-tk-data"),
            ("odd/stack id", "cache.v1", "flotilla-odd_stack_id-cache.v1"),
        ] {
            let volume = volume_name(stack, name);
            assert_eq!(volume, want);
            assert!(
                volume
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')),
                "{volume} is within Docker's volume-name rules"
            );
        }
    }

    #[test]
    fn volumes_a_stack_already_mounts_by_their_bare_name_keep_it() {
        let names = VolumeNames::new("mo-a-1-tk", ["data", "flotilla-mo-a-1-tk-cache"]);
        assert_eq!(names.of("data"), "data", "created before per-stack names");
        assert_eq!(names.of("cache"), "flotilla-mo-a-1-tk-cache");
        assert_eq!(
            names.of("logs"),
            "flotilla-mo-a-1-tk-logs",
            "new volumes are the stack's"
        );
        let fresh = VolumeNames::new("mo-b-2-tk", []);
        assert_eq!(fresh.of("data"), "flotilla-mo-b-2-tk-data");
        let older = VolumeNames::new("mo-b-2-tk", []).scoped(false);
        assert_eq!(
            older.of("data"),
            "data",
            "a stack from before keeps them all"
        );
    }
}
