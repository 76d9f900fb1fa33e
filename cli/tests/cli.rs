//! The `flotilla` binary on its own: help, and clear errors with no
//! session or no controller. (The full tour against a real controller is
//! in the workspace's end-to-end tests.)

use std::process::Command;

fn flotilla(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .env("FLOTILLA_CONFIG_DIR", config)
        .env_remove("FLOTILLA_URL")
        .env_remove("FLOTILLA_TOKEN")
        .output()
        .expect("flotilla runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (success, out, _) = flotilla(dir.path(), &["--help"]);
    assert!(success);
    for command in [
        "login", "apply", "update", "diff", "versions", "stacks", "describe", "delete", "agents",
        "drain", "revoke", "logs", "events", "restart",
    ] {
        assert!(out.contains(command), "{command} in {out}");
    }
}

#[test]
fn without_a_session_or_a_controller_the_errors_say_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (success, _, err) = flotilla(dir.path(), &["stacks"]);
    assert!(!success);
    assert!(err.starts_with("error: not logged in"), "{err}");
    assert!(err.contains("flotilla login"), "{err}");
    let (success, _, err) = flotilla(
        dir.path(),
        &["--url", "http://127.0.0.1:9", "--token", "t", "stacks"],
    );
    assert!(!success);
    assert!(
        err.contains("cannot reach the controller at http://127.0.0.1:9"),
        "{err}"
    );
    let (success, _, err) = flotilla(
        dir.path(),
        &[
            "--url",
            "http://127.0.0.1:9",
            "login",
            "--client-id",
            "c",
            "--client-secret",
            "s",
        ],
    );
    assert!(!success);
    assert!(err.contains("cannot reach"), "{err}");
    assert!(
        !err.contains(" s\n") && !err.contains("\"s\""),
        "no secret echoed: {err}"
    );
}
