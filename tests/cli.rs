//! The `tara` command as a user runs it.

mod common;

use std::process::Command;

use common::within;

fn tara(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tara"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("tara runs")
}

/// Issue 2: `tara demo --json` prints one JSON object with the summary keys, and the executor
/// replicas agree.
#[test]
fn demo_prints_a_json_summary() {
    within(120, || {
        let out = tara(&["demo", "--seconds", "2", "--clients", "8", "--json"]);
        assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        for key in ["executed", "throughput_ops", "p50_us", "p99_us", "digests_agree"] {
            assert!(summary.get(key).is_some(), "missing {key}: {summary}");
        }
        assert_eq!(summary["digests_agree"], serde_json::Value::Bool(true));
        assert_eq!(summary["errors"], serde_json::json!(0));
        assert!(summary["executed"].as_u64().unwrap() > 100, "{summary}");
    });
}

/// A wrong description file gives a clear message and a non-zero exit code.
#[test]
fn demo_rejects_a_bad_description() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "f = 0\n").unwrap();
    let out = tara(&["demo", "--seconds", "1", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`f`: must be at least 1"), "{stderr}");

    let out = tara(&["demo", "--config", "/nonexistent/file.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read description file"));
}
