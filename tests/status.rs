//! The operator's view: logs without escape codes when stderr is a file.

#[path = "common/procs.rs"]
mod procs;

use std::process::{Command, Stdio};

/// `tara run` with stderr to a file writes plain text: level names without colour codes.
#[test]
fn logs_to_a_file_carry_no_escape_codes() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Nobody else runs: the process logs its roles, waits 300 ms for its peers, gives up.
    let (config, _) = procs::write_description(dir.path(), "connect_timeout_ms = 300");
    let log = dir.path().join("stderr.log");
    let file = std::fs::File::create(&log).expect("a log file");
    let status = Command::new(env!("CARGO_BIN_EXE_tara"))
        .args(["run", "--config", &config, "--process", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .status()
        .expect("tara runs");
    assert!(!status.success(), "a process without its peers fails");
    let bytes = std::fs::read(&log).expect("the log");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("INFO") && text.contains("process 0 of 3"), "the log has its lines: {text}");
    assert!(!bytes.contains(&0x1b), "an escape byte in a log file: {text:?}");
}

/// `tara status` prints one row per replica of every process, with the column heads the README
/// names, and executors within the lag their counters allow.
#[test]
fn status_prints_every_replica_of_the_cluster() {
    let cluster = procs::LocalCluster::start("");
    let mut client = tara::client::Client::new(cluster.pool());
    let op = tara::app::coordination::CoordOp::Create { path: "/s".into(), data: Vec::new(), sequential: false };
    client.invoke(op.encode()).expect("the cluster answers");
    let output = Command::new(env!("CARGO_BIN_EXE_tara"))
        .args(["status", "--connect", &cluster.every.join(",")])
        .output()
        .expect("tara status runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    let wanted = ["process", "stage", "replica", "partition", "view", "next", "stable", "lag", "executed", "restarts"];
    assert_eq!(&head[..wanted.len()], &wanted[..], "{text}");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let executors: Vec<&Vec<&str>> = rows.iter().filter(|r| r[1] == "executors").collect();
    assert_eq!(executors.len(), 3, "2f+1 executors: {text}");
    for stage in ["sources", "proposers", "committers", "executors", "gc", "controllers"] {
        assert!(rows.iter().any(|r| r[1] == stage), "no {stage}: {text}");
    }
    for row in &executors {
        let next: u64 = row[5].parse().expect("next is a number");
        assert!(next >= 1, "an executor executed the create: {text}");
        assert!(row[7].parse::<u64>().is_ok() && row[10] == "up", "{text}");
    }
}
