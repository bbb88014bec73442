//! The `trainer` binary as a user runs it: help, bad input, Ctrl-C.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
}

const QUICK: &[&str] = &["--model", "tiny", "--critic-width", "32", "--batch-size", "8", "--knn-images", "0"];

#[test]
fn help_lists_the_commands_and_formats() {
    let out = trainer().args(["fit", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for word in ["--resume", "--max-steps", "data_batch_", "IDX", "--backend", "Example"] {
        assert!(text.contains(word), "fit --help lacks {word}:\n{text}");
    }
}

#[test]
fn missing_data_and_unknown_backend_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = trainer().args(["fit", "--data", "/nonexistent/cifar", "--out"]).arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/cifar"), "{err}");
    let out = trainer().args(["fit", "--backend", "cuda", "--out"]).arg(dir.path().join("x")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--features cuda"), "{err}");
}

#[test]
fn ctrl_c_saves_a_checkpoint_that_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut child = trainer()
        .args(["fit", "--epochs", "1000", "--out"])
        .arg(&run)
        .args(QUICK)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let metrics = run.join("metrics.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |s| s.lines().count()) < 3 {
        assert!(start.elapsed() < Duration::from_secs(120), "no training progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted runs exit 130");
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    let steps = std::fs::read_to_string(&metrics).unwrap().lines().filter(|l| l.contains("\"step\"")).count();
    assert_eq!(latest.trim(), format!("step-{steps:08}"), "checkpoint at the step training stopped");
    let out = trainer().args(["fit", "--resume", "--max-steps"]).arg((steps + 2).to_string()).arg("--out").arg(&run).args(QUICK).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming from"));
}
