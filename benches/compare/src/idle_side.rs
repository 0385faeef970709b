//! What an idle cluster costs, and whether idling costs the next command anything: the three
//! processes of `dataflows/local-f1.toml` (as in the TCP row), serving nothing but the
//! supervisor's health probe.
//!
//! After a steady phase (one client, commands back to back, for the reference median), the
//! cluster idles; the CPU time of each `tara run` process over the idle period is read from
//! `/proc/PID/stat` and its threads' voluntary context switches (wake-ups) from
//! `/proc/PID/task/*/status`. Then, several times, the client waits `IDLE_GAP` and sends one
//! command: the latency of that first command after an idle period is reported beside the
//! steady median.

use std::time::{Duration, Instant};

use serde::Serialize;
use tara::app::coordination::{CoordOp, CoordResponse, decode_result};
use tara::client::Client;

use crate::tcp_side::{Local, local_cluster};

/// The idle gap before each first command: longer than the one second after which a process
/// takes its idle epoch and its operators their long idle ticks.
const IDLE_GAP: Duration = Duration::from_secs(3);

/// The short gap the idle gap is compared with: long enough for every thread to park, too short
/// for any process to take its idle epoch. What the first command after it costs beyond the
/// steady median is the price of waking parked threads, which has nothing to do with idling.
const SHORT_GAP: Duration = Duration::from_millis(50);

/// First commands after an idle gap, measured.
const FIRST_COMMANDS: usize = 10;

/// Commands of the steady phase.
const STEADY_COMMANDS: usize = 500;

/// What the idle measurement found.
#[derive(Clone, Debug, Serialize)]
pub struct Idle {
    /// Seconds the CPU time was measured over.
    pub seconds: f64,
    /// The supervisor's probe interval in the description, milliseconds.
    pub probe_interval_ms: u64,
    /// Per process (in process order): percent of one core used while idle.
    pub cpu_percent: Vec<f64>,
    /// Per process: voluntary context switches per second over all its threads.
    pub wakeups_per_s: Vec<f64>,
    /// Median latency of back-to-back commands from one client, microseconds.
    pub steady_p50_us: u64,
    /// Seconds the client stays silent before each first command.
    pub gap_seconds: f64,
    /// Latency of each first command after an idle gap, microseconds.
    pub first_after_idle_us: Vec<u64>,
    /// Milliseconds of the short gap, too short for idling.
    pub short_gap_ms: u64,
    /// Latency of each first command after a short gap, microseconds (interleaved with the idle
    /// gaps).
    pub first_after_short_us: Vec<u64>,
}

/// The median of `values`.
fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

impl Idle {
    /// The median latency of a first command after an idle gap.
    pub fn first_after_idle_p50_us(&self) -> u64 {
        median(&self.first_after_idle_us)
    }

    /// The median latency of a first command after a short gap.
    pub fn first_after_short_p50_us(&self) -> u64 {
        median(&self.first_after_short_us)
    }

    /// What idling adds to the first command: its median after an idle gap over its median after
    /// a short one.
    pub fn idle_over_short(&self) -> f64 {
        self.first_after_idle_p50_us() as f64 / self.first_after_short_p50_us().max(1) as f64
    }
}

/// CPU ticks (user + system) of process `pid`, and the voluntary context switches of its threads.
fn sample(pid: u32) -> Result<(u64, u64), String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("process {pid}: {e}"))?;
    // The command name is in parentheses and may hold spaces: fields count from the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).ok_or(format!("process {pid}: bad stat"));
    let ticks = tick(11)? + tick(12)?;
    let mut switches = 0;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| format!("process {pid}: {e}"))?;
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        switches += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok((ticks, switches))
}

/// The children of process `parent` (the `tara run` processes of a supervisor), by pid.
fn children(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(parent) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// One `set data` of 64 bytes through `client`; its latency.
fn timed_set(client: &mut Client) -> Result<Duration, String> {
    let op = CoordOp::SetData { path: "/idle".into(), data: vec![7; 64], version: None };
    let started = Instant::now();
    let result = client.invoke(op.encode()).map_err(|e| e.to_string())?;
    let took = started.elapsed();
    match decode_result(&result)? {
        Ok(CoordResponse::Set(_)) => Ok(took),
        other => Err(format!("set data on /idle answered {other:?}")),
    }
}

/// Measures the idle cluster for `seconds`.
pub fn run(seconds: Duration) -> Result<Idle, String> {
    let Local { cluster, description, mut client, .. } = local_cluster()?;
    let create = CoordOp::Create { path: "/idle".into(), data: Vec::new(), sequential: false };
    client.invoke(create.encode()).map_err(|e| e.to_string())?;
    let mut steady: Vec<u64> = Vec::with_capacity(STEADY_COMMANDS);
    for _ in 0..STEADY_COMMANDS {
        steady.push(timed_set(&mut client)?.as_micros() as u64);
    }
    steady.sort_unstable();
    let processes = children(cluster.child.id());
    if processes.len() != description.process.len() {
        return Err(format!("found {} tara run processes, expected {}", processes.len(), description.process.len()));
    }
    // Past the one second after which a process takes its idle epoch.
    std::thread::sleep(Duration::from_secs(2));
    let before = processes.iter().map(|p| sample(*p)).collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    std::thread::sleep(seconds);
    let after = processes.iter().map(|p| sample(*p)).collect::<Result<Vec<_>, _>>()?;
    let elapsed = started.elapsed().as_secs_f64();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_percent = before.iter().zip(&after).map(|(b, a)| (a.0 - b.0) as f64 / hz / elapsed * 100.0).collect();
    let wakeups_per_s = before.iter().zip(&after).map(|(b, a)| (a.1 - b.1) as f64 / elapsed).collect();
    let (mut first_after_idle_us, mut first_after_short_us) = (Vec::new(), Vec::new());
    for _ in 0..FIRST_COMMANDS {
        for (gap, latencies) in [(SHORT_GAP, &mut first_after_short_us), (IDLE_GAP, &mut first_after_idle_us)] {
            std::thread::sleep(gap);
            latencies.push(timed_set(&mut client)?.as_micros() as u64);
        }
    }
    Ok(Idle {
        seconds: elapsed,
        probe_interval_ms: description.probe_interval_ms,
        cpu_percent,
        wakeups_per_s,
        steady_p50_us: steady[steady.len() / 2],
        gap_seconds: IDLE_GAP.as_secs_f64(),
        first_after_idle_us,
        short_gap_ms: SHORT_GAP.as_millis() as u64,
        first_after_short_us,
    })
}
