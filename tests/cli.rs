//! The `tara` command as a user runs it.

mod common;
#[path = "common/procs.rs"]
mod procs;

use std::process::Command;

use common::within;

fn tara(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tara"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("tara runs")
}

/// `tara demo --json` prints one JSON object with the summary keys, and the executor
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

/// `tara bench` on a description with processes starts them under a supervisor, drives
/// closed-loop clients over TCP, and prints the same JSON summary as `tara demo`, with the
/// executors of all processes in agreement; the processes are gone afterwards.
#[test]
fn bench_over_tcp_on_a_self_started_cluster() {
    within(180, || {
        let dir = tempfile::tempdir().unwrap();
        let (config, description) = procs::write_description(dir.path(), "pool_znodes = 50");
        let out_dir = dir.path().to_str().unwrap();
        let config = config.as_str();
        let args = ["bench", "--config", config, "--clients", "8", "--seconds", "2", "--json", "--out", out_dir];
        let out = tara(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "stderr: {stderr}");
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        for key in ["executed", "throughput_ops", "p50_us", "p99_us", "digests_agree"] {
            assert!(summary.get(key).is_some(), "missing {key}: {summary}");
        }
        assert_eq!(summary["digests_agree"], serde_json::Value::Bool(true), "{summary}");
        assert_eq!(summary["errors"], serde_json::json!(0));
        assert!(summary["completed"].as_u64().unwrap() > 100, "{summary}");
        assert!(stderr.contains("tara cluster: stopping") && !stderr.contains("restart 1"), "{stderr}");
        // The description's ports are free again: every process has exited.
        for p in description.processes(None).unwrap() {
            assert!(std::net::TcpListener::bind(&p.timely).is_ok(), "{} still in use", p.timely);
        }
    });
}

/// `tara graph` prints the dataflow as DOT: every process, stage and loop.
#[test]
fn graph_prints_the_dataflow_as_dot() {
    let out = tara(&["graph", "--config", "dataflows/local-f1.toml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dot = String::from_utf8_lossy(&out.stdout);
    assert!(dot.starts_with("digraph tara {"), "{dot}");
    for needle in
        ["cluster_process_2", "executors (3)", "label=\"Record (record loop)\", style=dashed", "f = 1, 3 process(es)"]
    {
        assert!(dot.contains(needle), "{needle} missing:\n{dot}");
    }
}

/// `tara demo` on a multi-process description says what to run instead.
#[test]
fn demo_on_a_multi_process_description_points_to_cluster_and_bench() {
    let out = tara(&["demo", "--seconds", "1", "--config", "dataflows/local-f1.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`tara demo` runs an embedded cluster"), "{stderr}");
    assert!(stderr.contains("tara cluster --config dataflows/local-f1.toml"), "{stderr}");
    assert!(!stderr.contains("workers ="), "no advice to change the worker count: {stderr}");
}

/// The usage lines of `set` and `delete` show `--version`; `--connect` is required even though
/// it may come after the operation.
#[test]
fn client_usage_is_complete() {
    for op in ["set", "delete"] {
        let out = tara(&["client", op, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        let usage = help.lines().find(|l| l.starts_with("Usage:")).unwrap_or_default();
        assert!(usage.contains("--version") && usage.contains("--connect"), "{op}: {usage}");
    }
    let out = tara(&["client", "get", "/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --connect"));
    // After the operation, --connect is taken (and reaches nothing here).
    let closed = format!("127.0.0.1:{}", procs::free_port());
    let out = tara(&["client", "get", "/x", "--connect", &closed, "--timeout-ms", "1000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&closed) && !stderr.contains("unexpected argument"), "{stderr}");
}

/// `tara cluster --fresh` removes only a directory that tara wrote: a `state_dir` that holds
/// anything else is refused before any process starts, and nothing in it is touched.
#[test]
fn a_fresh_start_refuses_a_foreign_state_directory() {
    within(60, || {
        let dir = tempfile::tempdir().unwrap();
        let (config, _) = procs::write_description(dir.path(), "");
        let state = dir.path().join("state");
        std::fs::create_dir_all(state.join("committer-0")).unwrap();
        std::fs::write(state.join("thesis.tex"), b"four years of work").unwrap();
        let out = tara(&["cluster", "--config", &config, "--fresh"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("not a tara state directory") && stderr.contains("thesis.tex"), "{stderr}");
        assert!(state.join("thesis.tex").exists() && state.join("committer-0").exists());
        assert!(!stderr.contains("started, pid"), "no process was started: {stderr}");
    });
}

/// Without `--out`, `tara bench` writes under target/, never into the sources.
#[test]
fn bench_writes_under_target_by_default() {
    within(120, || {
        let out = tara(&["bench", "--seconds", "1", "--clients", "2", "--json"]);
        assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        let csv = summary["csv"].as_str().expect("the CSV path");
        assert!(csv.starts_with("target/tara-bench/"), "{csv}");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        assert!(root.join(csv).exists() && root.join(summary["plot"].as_str().unwrap()).exists());
    });
}
