//! The agent binary's command line.

use std::process::Command;

#[test]
fn version_and_an_honest_refusal() {
    let bin = env!("CARGO_BIN_EXE_flotilla-agent");
    let out = Command::new(bin).arg("--version").output().expect("runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("flotilla-agent "));
    let out = Command::new(bin).arg("run").output().expect("runs");
    assert!(
        !out.status.success(),
        "run refuses until the fleet link exists"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("fleet link"));
}
