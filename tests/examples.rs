//! Runs each example with a small bound: it must exit 0 within the time limit and print its
//! expected line.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
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
    assert!(out.contains("process 0 of 1: its 600 of 600 commands executed exactly once"), "{out}");
    assert!(out.contains("worker 2, commands up to time"), "every worker counts its prefixes:\n{out}");
}

/// How long a two-process run may take, connecting included.
const TWO_PROCESS_LIMIT: Duration = Duration::from_secs(120);

/// One process of a multi-process example, its output in files; killed on drop, so that a
/// failed test leaves no process behind.
struct Process {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Process {
    /// Starts process `p` of example `exe` with `args` and `-p p`, its output in `dir`.
    fn start(exe: &Path, args: &[&str], p: usize, commands: u64, dir: &Path) -> Process {
        let (stdout, stderr) = (dir.join(format!("p{p}.out")), dir.join(format!("p{p}.err")));
        let file = |path: &PathBuf| std::fs::File::create(path).expect("an output file");
        let child = Command::new(exe)
            .args(args)
            .args(["-p", &p.to_string()])
            .env("TARA_EXAMPLE_COMMANDS", commands.to_string())
            .stdout(file(&stdout))
            .stderr(file(&stderr))
            .spawn()
            .expect("the example starts");
        Process { child, stdout, stderr }
    }

    /// Its standard output and error so far.
    fn output(&self) -> String {
        let read = |path: &PathBuf| std::fs::read_to_string(path).unwrap_or_default();
        format!("{}{}", read(&self.stdout), read(&self.stderr))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two free 127.0.0.1 addresses (bound to port 0 together, so distinct, then released).
fn free_addresses() -> String {
    let listeners: Vec<_> = (0..2).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
    listeners.iter().map(|l| format!("{}\n", l.local_addr().expect("an address"))).collect()
}

/// Runs example `name` as two timely processes (`-n 2 -h <hostfile>` plus `args`) on free
/// ports; returns each process's exit status and output once both exited, or `None` if timely
/// could not bind a port (another program took it meanwhile). Fails after
/// [`TWO_PROCESS_LIMIT`] or as soon as one process fails, killing both.
fn run_two(name: &str, args: &[&str], commands: u64) -> Option<Vec<(ExitStatus, String)>> {
    let exe = example(name);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let hosts = dir.path().join("hosts.txt");
    std::fs::write(&hosts, free_addresses()).expect("the hostfile is written");
    let mut all: Vec<&str> = vec!["-n", "2", "-h", hosts.to_str().expect("a UTF-8 path")];
    all.extend(args);
    let mut processes: Vec<Process> = (0..2).map(|p| Process::start(&exe, &all, p, commands, dir.path())).collect();
    let start = Instant::now();
    let mut statuses = vec![None; 2];
    while statuses.iter().any(Option::is_none) {
        for (p, process) in processes.iter_mut().enumerate() {
            let status = process.child.try_wait().expect("the example's status");
            if let Some(status) = status.filter(|s| !s.success()) {
                let output = process.output();
                if output.contains("failed to initialize networking") {
                    return None;
                }
                return Some(vec![(status, output)]);
            }
            statuses[p] = statuses[p].or(status);
        }
        assert!(start.elapsed() < TWO_PROCESS_LIMIT, "example {name} ran longer than {TWO_PROCESS_LIMIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(statuses.into_iter().zip(&processes).map(|(s, p)| (s.expect("exited"), p.output())).collect())
}

/// `run_two`, once more if timely could not bind a port the first time.
fn run_two_retrying(name: &str, args: &[&str], commands: u64) -> Vec<(ExitStatus, String)> {
    run_two(name, args, commands)
        .or_else(|| run_two(name, args, commands))
        .expect("timely could not bind its ports twice")
}

#[test]
fn timely_job_counts_every_command_once_in_two_processes() {
    let outcomes = run_two_retrying("timely_job", &["-w", "2"], 600);
    assert_eq!(outcomes.len(), 2, "a process failed: {outcomes:?}");
    for (p, (status, out)) in outcomes.iter().enumerate() {
        assert!(status.success(), "process {p} failed ({status}):\n{out}");
        assert!(out.contains(&format!("process {p} of 2: its 300 of 600 commands executed exactly once")), "{out}");
    }
    assert!(outcomes[1].1.contains("worker 2, commands up to time"), "process 1 counts a prefix:\n{}", outcomes[1].1);
}

/// Two processes of one worker each cannot hold three committers on distinct workers: the
/// example says so and exits non-zero, before it starts any networking.
#[test]
fn timely_job_refuses_a_job_too_small_for_its_replicas() {
    let out = Command::new(example("timely_job"))
        .args(["-w", "1", "-n", "2", "-p", "0"])
        .env("TARA_EXAMPLE_COMMANDS", "10")
        .output()
        .expect("the example runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it ran:\n{stderr}");
    assert!(stderr.contains("need 3 distinct workers") && stderr.contains("has 2"), "{stderr}");
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
