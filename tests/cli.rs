//! The binary's surface: help lists every stage, config errors are clear.

use std::process::Command;

fn sv72() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sv72"))
}

#[test]
fn help_lists_every_subcommand() {
    let out = sv72().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "ingest",
        "synth-mix",
        "train-head",
        "eval",
        "ab-test",
        "calibrate",
        "export",
        "serve",
        "retrain-check",
        "embed",
        "fetch-backbone",
        "metagraph",
        "econ",
        "demo-data",
    ] {
        assert!(text.contains(cmd), "--help does not list {cmd}:\n{text}");
    }
}

#[test]
fn unknown_config_key_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("my.yaml");
    std::fs::write(&cfg, "train:\n  epohcs: 3\n").unwrap();
    let out = sv72()
        .args(["--config", cfg.to_str().unwrap(), "train-head"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("epohcs") && err.contains("my.yaml"), "{err}");
}

#[cfg(unix)]
#[test]
fn closed_stdout_pipe_exits_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let mut child = sv72()
        .args(["demo-data", "--out"])
        .arg(dir.path().join("demo"))
        .args(["--count", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close our end of stdout before the child prints: it must not panic.
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    // Finished normally, or ended by SIGPIPE (the default action `sv72` restores), never a
    // panic's exit code 101.
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.success() || status.signal() == Some(libc::SIGPIPE),
        "{status:?}: {err}"
    );
}
