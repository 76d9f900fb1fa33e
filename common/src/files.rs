//! Files that hold secrets: keys, credentials. Both daemons write them the
//! same way, so the permissions cannot drift apart.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `contents` to `path`, readable by the owner only (0600 from the
/// moment the file exists, never chmod-ed afterwards), atomically: a
/// temporary file is synced and renamed over the target.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Creates `path` (and its parents) if needed and makes it private (0700).
/// Returns the mode it had when it was not 0700 already.
pub fn private_dir(path: &Path) -> std::io::Result<Option<u32>> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode == 0o700 {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    Ok(Some(mode))
}

/// Makes `dir` private (0700) and every file below it owner-only (0600):
/// for stores whose library creates its files with the process umask (the
/// agent's store holds the desired state, with stack tokens and registry
/// passwords).
pub fn private_tree(dir: &Path) -> std::io::Result<()> {
    private_dir(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            private_tree(&path)?;
        } else if kind.is_file() {
            let mode = entry.metadata()?.permissions().mode() & 0o777;
            if mode != 0o600 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_private_from_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("a/b");
        assert_eq!(private_dir(&sub).expect("dir"), None);
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(private_dir(&sub).expect("dir"), Some(0o755));
        let file = sub.join("key");
        write_private(&file, b"secret").expect("write");
        assert_eq!(
            std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read(&file).expect("read"), b"secret");
    }
}
