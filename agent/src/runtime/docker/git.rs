//! Code deploys from git: a cached mirror per (stack, repository), so one
//! stack's credentials or fetch never serve another stack, the reference
//! resolved to a commit, that commit exported into its own release
//! directory (complete before anything mounts it), the last few releases
//! kept. The git command line does the work; an SSH key, when given, lives
//! in a 0600 file for the length of one command and is never logged.
//! Errors never quote credentials: userinfo is stripped from every URL in
//! them (git's own messages quote the remote).

use super::super::spec::Git;
use flotilla_common::redact::strip_url_credentials;
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
    // Bounded waits on the server: a git host that stalls fails the fetch
    // (and is retried) instead of holding the slot.
    let mut ssh: Vec<String> = [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=15",
        "-o",
        "ServerAliveInterval=10",
        "-o",
        "ServerAliveCountMax=3",
    ]
    .map(str::to_owned)
    .to_vec();
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
        let message = format!("git {}: {last}", args.first().copied().unwrap_or(""));
        Err(strip_url_credentials(&message).into_owned())
    }
}

/// The mirror directory of a repository for one stack: two stacks naming
/// the same URL get two mirrors, each fetched with its own credentials.
fn mirror_of(root: &Path, stack_id: &str, repo: &str) -> PathBuf {
    let mut digest = Sha256::new();
    digest.update(stack_id.as_bytes());
    digest.update([0]);
    digest.update(repo.as_bytes());
    root.join("git").join(&hex::encode(digest.finalize())[..32])
}

/// Removes the mirrors kept per repository alone (named by 16 hex digits,
/// shared by every stack naming the URL) that agents before per-stack
/// mirrors left; each stack fetches its own again.
pub fn remove_shared_mirrors(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root.join("git")) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stem = name.strip_suffix(".partial").unwrap_or(&name);
        if stem.len() == 16 && stem.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Err(err) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(mirror = %name, error = %err, "removing a shared mirror failed");
            }
        }
    }
}

/// Fetches the stack's mirror of the repository and resolves the reference
/// to a commit.
pub async fn resolve(root: &Path, stack_id: &str, git: &Git) -> Result<String, String> {
    let mirror = mirror_of(root, stack_id, &git.repo);
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
        let message = format!(
            "reference {:?} is not a branch, tag or commit of {}",
            git.reference, git.repo
        );
        strip_url_credentials(&message).into_owned()
    })
}

/// Exports `commit` from the stack's mirror into `<commit>` under
/// `slot_dir` (once; a slot's directory belongs to one stack), and prunes
/// old releases.
pub async fn export(
    root: &Path,
    stack_id: &str,
    slot_dir: &Path,
    git: &Git,
    commit: &str,
) -> Result<Release, String> {
    let mirror = mirror_of(root, stack_id, &git.repo);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_are_per_stack_and_repository() {
        let root = Path::new("/code");
        let table = [
            (("s1", "https://h/r.git"), ("s1", "https://h/r.git"), true),
            (("s1", "https://h/r.git"), ("s2", "https://h/r.git"), false),
            (
                ("s1", "https://h/r.git"),
                ("s1", "https://h/other.git"),
                false,
            ),
            // The separator keeps (stack, repo) pairs from running together.
            (("s1", "xhttps://h"), ("s1x", "https://h"), false),
        ];
        for ((s1, r1), (s2, r2), same) in table {
            assert_eq!(
                mirror_of(root, s1, r1) == mirror_of(root, s2, r2),
                same,
                "{s1} {r1} / {s2} {r2}"
            );
        }
    }

    #[test]
    fn only_shared_mirrors_are_removed() {
        let root = tempfile::tempdir().expect("tempdir");
        let kept = mirror_of(root.path(), "s1", "https://h/r.git");
        let shared = root.path().join("git/0123456789abcdef");
        let partial = root.path().join("git/0123456789abcdef.partial");
        for dir in [&kept, &shared, &partial] {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        remove_shared_mirrors(root.path());
        assert!(kept.exists());
        assert!(!shared.exists() && !partial.exists());
        remove_shared_mirrors(&root.path().join("absent"));
    }

    fn git_in(dir: &Path, args: &[&str]) {
        let status = std::process::Command::new("git")
            .args(["-c", "user.name=T", "-c", "user.email=t@t.invalid"])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git runs");
        assert!(status.status.success(), "git {args:?}: {status:?}");
    }

    /// Serves `dir` over plain HTTP (git's "dumb" protocol needs nothing
    /// more), ignoring credentials; returns the port.
    fn serve(dir: PathBuf) -> u16 {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let path = path
                    .split('?')
                    .next()
                    .unwrap_or("/")
                    .trim_start_matches('/');
                loop {
                    let mut header = String::new();
                    match reader.read_line(&mut header) {
                        Ok(n) if n > 2 => continue,
                        _ => break,
                    }
                }
                let mut out = &stream;
                match std::fs::read(dir.join(path)) {
                    Ok(body) => {
                        let _ = write!(
                            out,
                            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        );
                        let _ = out.write_all(&body);
                    }
                    Err(_) => {
                        let _ = write!(out, "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                    }
                }
            }
        });
        port
    }

    #[tokio::test]
    async fn a_failed_reference_never_quotes_the_credentials() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let work = scratch.path().join("work");
        std::fs::create_dir_all(&work).expect("mkdir");
        git_in(&work, &["init", "-q", "-b", "master"]);
        std::fs::write(work.join("index.html"), "one").expect("write");
        git_in(&work, &["add", "index.html"]);
        git_in(&work, &["commit", "-q", "-m", "one"]);
        git_in(
            scratch.path(),
            &["clone", "-q", "--bare", "work", "served/repo.git"],
        );
        git_in(
            &scratch.path().join("served/repo.git"),
            &["update-server-info"],
        );
        let port = serve(scratch.path().join("served"));
        let root = scratch.path().join("code");
        let mut git = Git {
            repo: format!("http://deployer:hunter2-secret@127.0.0.1:{port}/repo.git"),
            reference: "master".into(),
            private_key: None,
            known_hosts: None,
            trust_on_first_use: false,
            poll: None,
        };
        let commit = resolve(&root, "s1", &git).await.expect("the clone works");
        assert_eq!(commit.len(), 40);
        git.reference = "no-such-branch".into();
        let err = resolve(&root, "s1", &git)
            .await
            .expect_err("the reference does not exist");
        assert!(err.contains("no-such-branch"), "{err}");
        assert!(
            err.contains(&format!("http://127.0.0.1:{port}/repo.git")),
            "{err}"
        );
        assert!(
            !err.contains("hunter2-secret") && !err.contains("deployer"),
            "{err}"
        );
        git.repo = format!("http://deployer:hunter2-secret@127.0.0.1:{port}/missing.git");
        let err = resolve(&root, "s1", &git)
            .await
            .expect_err("no such repository");
        assert!(!err.contains("hunter2-secret"), "{err}");
    }
}
