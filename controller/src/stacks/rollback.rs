//! Rollback: which earlier version's body becomes the next version.

use super::error::{StackError, StackResult};
use crate::store::VersionRecord;

/// The version to roll back to: `version_id`, or (none given) the one
/// before the latest. The latest itself is refused: rolling back to it
/// would change nothing.
pub fn target<'a>(
    versions: &'a [VersionRecord],
    latest_seq: u64,
    version_id: Option<&str>,
) -> StackResult<&'a VersionRecord> {
    let found = match version_id.filter(|id| !id.is_empty()) {
        Some(id) => versions
            .iter()
            .find(|v| v.version_id == id)
            .ok_or_else(|| StackError::NotFound {
                kind: "version_id",
                id: id.to_owned(),
            })?,
        None => versions
            .iter()
            .filter(|v| v.seq < latest_seq)
            .max_by_key(|v| v.seq)
            .ok_or_else(|| {
                StackError::Conflict(
                    "the stack has only one version; there is none before it to roll back to"
                        .into(),
                )
            })?,
    };
    if found.seq == latest_seq {
        return Err(StackError::Conflict(format!(
            "version {} is already the latest",
            found.version_id
        )));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(n: u64) -> Vec<VersionRecord> {
        (1..=n)
            .map(|seq| VersionRecord {
                stack_id: "s".into(),
                seq,
                version_id: format!("v{seq}"),
                created_ms: 0,
                body: "{}".into(),
                pools: Default::default(),
            })
            .collect()
    }

    #[test]
    fn the_target_is_the_named_or_the_previous_version() {
        for (count, latest, given, want) in [
            (3, 3, None, Ok("v2")),
            (3, 3, Some(""), Ok("v2")),
            (3, 3, Some("v1"), Ok("v1")),
            (3, 3, Some("v3"), Err("conflict")),
            (1, 1, None, Err("conflict")),
            (3, 3, Some("v9"), Err("not found")),
        ] {
            let all = versions(count);
            let got = target(&all, latest, given)
                .map(|v| v.version_id.as_str())
                .map_err(|err| match err {
                    StackError::Conflict(_) => "conflict",
                    StackError::NotFound { .. } => "not found",
                    _ => "other",
                });
            assert_eq!(got, want, "{count} {given:?}");
        }
    }
}
