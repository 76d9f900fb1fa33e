//! Volumes: a host bind (the source is an absolute host path) or a named
//! volume (the source is a name, which the agent scopes to the stack).

use super::fields::string;
use super::limits::TEXT_LEN;
use serde_json::Value;

/// Where a volume's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A host path, normalised (no `.`, `..`, repeated or trailing `/`), so
    /// the path a policy checks is the path that is mounted.
    HostPath(String),
    /// A named volume as the template names it; the agent mounts the
    /// stack's own volume of that name.
    Named(String),
}

/// One entry of `volumes`: `"source:/target[:ro|:rw]"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// What is mounted.
    pub source: VolumeSource,
    /// Where in the container, normalised and absolute.
    pub target: String,
    /// Mounted read-only (`:ro`).
    pub read_only: bool,
}

/// `path` with `.`, `..`, repeated and trailing slashes resolved lexically
/// (`..` at the root stays at the root); `None` when it is not absolute.
pub fn normalise_path(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Whether `path` is `prefix` or below it, by whole components (both
/// normalised): `/srv/data` holds `/srv/data/x`, not `/srv/database`.
pub fn is_within(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether `name` is a volume name Docker accepts (and leaves room for the
/// agent's per-stack prefix).
pub fn is_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    (1..=64).contains(&name.len())
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// One entry of `volumes`.
pub(crate) fn volume(value: &Value) -> Result<Volume, String> {
    let text = string(value, TEXT_LEN)?;
    let bad = || format!("{text:?} is not \"/host/path-or-volume-name:/container/path[:ro|:rw]\"");
    let (source, target, read_only) = match text.split(':').collect::<Vec<_>>().as_slice() {
        [source, target] => (*source, *target, false),
        [source, target, "ro"] => (*source, *target, true),
        [source, target, "rw"] => (*source, *target, false),
        _ => return Err(bad()),
    };
    let target = normalise_path(target)
        .filter(|t| t != "/")
        .ok_or_else(|| format!("{text:?}: the container path must be absolute and not \"/\""))?;
    let source = if source.starts_with('/') {
        VolumeSource::HostPath(normalise_path(source).ok_or_else(bad)?)
    } else if is_volume_name(source) {
        VolumeSource::Named(source.to_owned())
    } else {
        return Err(format!(
            "{text:?}: the source must be an absolute host path or a volume name (letters, digits, '_', '.', '-', at most 64)"
        ));
    };
    Ok(Volume {
        source,
        target,
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalising() {
        for (path, want) in [
            ("/srv/data/", Some("/srv/data")),
            ("/srv//data/./x", Some("/srv/data/x")),
            ("/srv/data/../../etc", Some("/etc")),
            ("/../..", Some("/")),
            ("/", Some("/")),
            ("srv", None),
        ] {
            assert_eq!(normalise_path(path).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn within() {
        for (path, prefix, want) in [
            ("/srv/data", "/srv/data", true),
            ("/srv/data/x", "/srv/data", true),
            ("/srv/database", "/srv/data", false),
            ("/srv", "/srv/data", false),
            ("/etc", "/", true),
        ] {
            assert_eq!(is_within(path, prefix), want, "{path} in {prefix}");
        }
    }

    #[test]
    fn volumes() {
        let host = |s: &str, t: &str, ro| Volume {
            source: VolumeSource::HostPath(s.into()),
            target: t.into(),
            read_only: ro,
        };
        for (value, want) in [
            (
                json!("/srv/data/:/data:ro"),
                Some(host("/srv/data", "/data", true)),
            ),
            (json!("/a/../b:/x:rw"), Some(host("/b", "/x", false))),
            (
                json!("cache:/cache"),
                Some(Volume {
                    source: VolumeSource::Named("cache".into()),
                    target: "/cache".into(),
                    read_only: false,
                }),
            ),
            (json!("relative"), None),
            (json!("cache:relative"), None),
            (json!("cache:/"), None),
            (json!("../x:/x"), None),
            (json!("-x:/x"), None),
            (json!("/a:/b:z"), None),
            (json!("/a:/b:ro:x"), None),
            (json!(":/b"), None),
            (json!(3), None),
        ] {
            assert_eq!(volume(&value).ok(), want, "{value}");
        }
    }
}
