//! The system tools some tests start (`sshd`, `docker-registry`,
//! `htpasswd`, `ssh-keygen`, the example image's `busybox`), found before
//! use, so a machine without one fails with the Debian package that has it
//! and the script that installs it, not a bare "No such file or directory".

use std::path::PathBuf;

/// Where daemons live that an ordinary `PATH` may leave out.
const SYSTEM_DIRS: &str = "/usr/sbin:/sbin:/usr/bin:/bin";

/// What a missing tool says: the tool, its package, and how to get it.
fn missing(name: &str, package: &str) -> String {
    format!(
        "this test needs `{name}`, which is not installed: install the Debian package \
         `{package}` (`apt-get install -y {package}`), or run `scripts/test` or \
         `bash .ci/run`, which install what the tests need"
    )
}

/// The path of `name` (looked up on `PATH`, then in the system
/// directories; an absolute path is taken as it is), or an error naming
/// `package`.
pub fn tool(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = format!("{path}:{SYSTEM_DIRS}");
    let found = if name.starts_with('/') {
        let path = PathBuf::from(name);
        path.is_file().then_some(path)
    } else {
        which::which_in(name, Some(dirs), "/").ok()
    };
    found.ok_or_else(|| anyhow::anyhow!(missing(name, package)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_names_its_package_and_the_script() {
        let cases = [
            ("flotilla-no-such-tool", "no-such-package"),
            ("/usr/sbin/flotilla-no-such-daemon", "no-such-server"),
        ];
        for (name, package) in cases {
            let err = tool(name, package).expect_err(name).to_string();
            assert!(err.contains(name), "{err}");
            assert!(err.contains(&format!("`{package}`")), "{err}");
            assert!(err.contains("scripts/test"), "{err}");
            assert!(err.contains("bash .ci/run"), "{err}");
        }
    }

    #[test]
    fn a_present_tool_is_found_on_the_path_or_by_its_path() {
        assert!(tool("sh", "dash").expect("sh").is_file());
        assert_eq!(
            tool("/bin/sh", "dash").expect("/bin/sh"),
            PathBuf::from("/bin/sh")
        );
    }
}
