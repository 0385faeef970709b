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
