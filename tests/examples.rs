//! Runs each example with a small bound: it must exit 0 within the time limit and print its
//! expected line.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one example may run (a loaded machine is slow, but none needs more than seconds).
const TIME_LIMIT: Duration = Duration::from_secs(60);

/// The binary of example `name`, built with the profile of this test: cargo builds examples
/// for `cargo test`, but not for `cargo test --test examples`, so build it here (a no-op when
/// it is up to date; never a stale binary).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/examples-<hash>: the examples are in target/<profile>/examples.
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "--example", name, "--manifest-path", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")]);
    if profile_dir.ends_with("release") {
        cargo.arg("--release");
    }
    let target_dir = profile_dir.parent().expect("the target dir");
    let status = cargo.env("CARGO_TARGET_DIR", target_dir).status().expect("cargo runs");
    assert!(status.success(), "building example {name} failed");
    profile_dir.join("examples").join(name)
}

/// Runs example `name` with `args` and the work bound `commands` (`TARA_EXAMPLE_COMMANDS`);
/// returns its standard output; fails unless it exits 0 within [`TIME_LIMIT`].
fn run(name: &str, args: &[&str], commands: u64) -> String {
    let mut child = Command::new(example(name))
        .args(args)
        .env("TARA_EXAMPLE_COMMANDS", commands.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the example starts");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("the example's status") {
            break status;
        }
        if start.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            panic!("example {name} ran longer than {TIME_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("the example's output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(status.success(), "example {name} failed ({status}):\n{stdout}");
    stdout
}

#[test]
fn embedded_kv_reads_back_every_write() {
    let out = run("embedded_kv", &["200"], 0);
    assert!(out.contains("200 puts and 200 gets answered, 0 reads wrong"), "{out}");
}

#[test]
fn timely_job_counts_every_command_once_on_three_workers() {
    let out = run("timely_job", &["-w", "3"], 600);
    assert!(out.contains("600 commands counted exactly once"), "{out}");
    assert!(out.contains("worker 2, commands up to time"), "every worker counts its prefixes:\n{out}");
}

#[test]
fn analytics_views_equal_a_recomputation() {
    let out = run("analytics", &[], 1000);
    assert!(out.contains("1000 commands: the views equal a recomputation over the workload"), "{out}");
    assert!(out.contains("after 1000 commands: znodes /config="), "printed at the last frontier:\n{out}");
}

#[test]
fn custom_app_conserves_money_and_never_goes_negative() {
    let out = run("custom_app", &[], 800);
    assert!(out.contains("total 800 conserved, no balance negative, replicas agree"), "{out}");
}
