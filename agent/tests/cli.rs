//! The agent binary's command line: clear refusals before anything runs.

use std::process::Command;

fn agent(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla-agent"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn refusals_name_what_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, out) = agent(dir.path(), &["--version"]);
    assert!(ok && out.starts_with("flotilla-agent "), "{out}");
    let (ok, out) = agent(dir.path(), &["run", "--runtime", "simulated"]);
    assert!(!ok && out.contains("flotilla-agent enroll"), "{out}");
    let (ok, out) = agent(dir.path(), &["status"]);
    assert!(!ok && out.contains("not enrolled"), "{out}");
    let (ok, out) = agent(
        dir.path(),
        &[
            "enroll",
            "--join-token",
            "x",
            "--ca-fingerprint",
            "sha256:00",
        ],
    );
    assert!(!ok && out.contains("--controller"), "{out}");
    let (ok, out) = agent(
        dir.path(),
        &[
            "enroll",
            "--controller",
            "127.0.0.1:9",
            "--join-token",
            "x",
            "--ca-fingerprint",
            "sha256:00",
        ],
    );
    assert!(!ok && out.contains("not a SHA-256 fingerprint"), "{out}");
    let (ok, out) = agent(
        dir.path(),
        &["enroll", "--controller", "127.0.0.1:9", "--join-token", "x"],
    );
    assert!(!ok && out.contains("--ca-fingerprint"), "{out}");
    let (ok, out) = agent(dir.path(), &["run", "--label", "nonsense"]);
    assert!(!ok, "{out}");
}
