//! Code deploys from git: a cached mirror per repository, the reference
//! resolved to a commit, that commit exported into its own release
//! directory (complete before anything mounts it), the last few releases
//! kept. The git command line does the work; an SSH key, when given, lives
//! in a 0600 file for the length of one command and is never logged.

use super::super::spec::Git;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// Releases kept per slot (the current one is always kept).
pub const KEEP_RELEASES: usize = 5;
/// Longest a git command may run.
const GIT_TIMEOUT: Duration = Duration::from_secs(300);

/// An exported commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub commit: String,
    pub path: PathBuf,
}

/// Runs git with the SSH settings of `git`, returning standard output.
async fn run(git: &Git, args: &[&str], cwd: Option<&Path>) -> Result<String, String> {
    let scratch =
        tempfile::tempdir().map_err(|err| format!("cannot create a temporary directory: {err}"))?;
    let mut ssh = vec!["ssh".to_owned(), "-o".into(), "BatchMode=yes".into()];
    if let Some(key) = &git.private_key {
        let path = scratch.path().join("key");
        let mut text = key.clone();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        flotilla_common::files::write_private(&path, text.as_bytes())
            .map_err(|err| format!("cannot write the SSH key: {err}"))?;
        ssh.extend([
            "-i".into(),
            path.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
        ]);
    }
    match (&git.known_hosts, git.trust_on_first_use) {
        (Some(known), _) => {
            let path = scratch.path().join("known_hosts");
            std::fs::write(&path, known)
                .map_err(|err| format!("cannot write known hosts: {err}"))?;
            ssh.extend([
                "-o".into(),
                format!("UserKnownHostsFile={}", path.display()),
                "-o".into(),
                "StrictHostKeyChecking=yes".into(),
            ]);
        }
        (None, true) => ssh.extend(["-o".into(), "StrictHostKeyChecking=accept-new".into()]),
        (None, false) => ssh.extend(["-o".into(), "StrictHostKeyChecking=yes".into()]),
    }
    let mut command = Command::new("git");
    command
        .args(args)
        .env("GIT_SSH_COMMAND", ssh.join(" "))
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let output = tokio::time::timeout(GIT_TIMEOUT, command.output())
        .await
        .map_err(|_| format!("git {} timed out", args.first().copied().unwrap_or("")))?
        .map_err(|err| format!("cannot run git: {err}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("failed")
            .trim()
            .to_owned();
        Err(format!(
            "git {}: {last}",
            args.first().copied().unwrap_or("")
        ))
    }
}

/// The mirror directory of a repository.
fn mirror_of(root: &Path, repo: &str) -> PathBuf {
    root.join("git")
        .join(&hex::encode(Sha256::digest(repo.as_bytes()))[..16])
}

/// Fetches the repository and resolves the reference to a commit.
pub async fn resolve(root: &Path, git: &Git) -> Result<String, String> {
    let mirror = mirror_of(root, &git.repo);
    if mirror.exists() {
        run(git, &["remote", "update", "--prune"], Some(&mirror)).await?;
    } else {
        let parent = mirror.parent().ok_or("bad mirror path")?;
        std::fs::create_dir_all(parent)
            .map_err(|err| format!("cannot create {}: {err}", parent.display()))?;
        let partial = mirror.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        let target = partial.display().to_string();
        run(
            git,
            &["clone", "--mirror", "--quiet", &git.repo, &target],
            None,
        )
        .await?;
        std::fs::rename(&partial, &mirror)
            .map_err(|err| format!("cannot place the mirror: {err}"))?;
    }
    let wanted = format!("{}^{{commit}}", git.reference);
    run(
        git,
        &["rev-parse", "--verify", "--quiet", &wanted],
        Some(&mirror),
    )
    .await
    .map_err(|_| {
        format!(
            "reference {:?} is not a branch, tag or commit of {}",
            git.reference, git.repo
        )
    })
}

/// Exports `commit` into `releases/<commit>` under `slot_dir` (once), and
/// prunes old releases.
pub async fn export(
    root: &Path,
    slot_dir: &Path,
    git: &Git,
    commit: &str,
) -> Result<Release, String> {
    let mirror = mirror_of(root, &git.repo);
    let path = slot_dir.join(commit);
    if !path.exists() {
        std::fs::create_dir_all(slot_dir)
            .map_err(|err| format!("cannot create {}: {err}", slot_dir.display()))?;
        let partial = slot_dir.join(format!(".{commit}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial)
            .map_err(|err| format!("cannot create {}: {err}", partial.display()))?;
        let archive = partial.join(".archive.tar");
        let archive_text = archive.display().to_string();
        run(
            git,
            &["archive", "--format=tar", "-o", &archive_text, commit],
            Some(&mirror),
        )
        .await?;
        let status = Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&partial)
            .status()
            .await
            .map_err(|err| format!("cannot run tar: {err}"))?;
        let _ = std::fs::remove_file(&archive);
        if !status.success() {
            return Err(format!("unpacking commit {commit} failed"));
        }
        // Complete: only now does it get the name a container mounts.
        std::fs::rename(&partial, &path)
            .map_err(|err| format!("cannot place release {commit}: {err}"))?;
    }
    prune(slot_dir, commit);
    Ok(Release {
        commit: commit.to_owned(),
        path,
    })
}

/// Keeps the newest [`KEEP_RELEASES`] releases (and `current`).
fn prune(slot_dir: &Path, current: &str) {
    let Ok(entries) = std::fs::read_dir(slot_dir) else {
        return;
    };
    let mut releases: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    releases.sort_by_key(|release| std::cmp::Reverse(release.0));
    for (_, path) in releases.into_iter().skip(KEEP_RELEASES) {
        if path.file_name().is_some_and(|n| n != current) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}
