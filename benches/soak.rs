//! Soak: the embedded cluster under full load for a long time (10 minutes by default), with the
//! resident memory sampled every 10 seconds. Memory must stay flat: every stage keeps state only
//! for its window, checkpoints are pruned to two per executor, and clients acknowledge answers.
//!
//! `cargo bench --bench soak`; `TARA_SOAK_SECONDS=600`, `TARA_SOAK_CLIENTS=64`.
//! Writes `papers/soak.csv` and `papers/soak.svg`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tara::app::coordination::Coordination;
use tara::cluster::workload::{self, Workload};
use tara::cluster::{Cluster, Description};
use tara::dataflow::{Control, ReplicaStats, Stage};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Resident memory of this process in KiB (Linux).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn main() {
    let seconds = env_u64("TARA_SOAK_SECONDS", 600);
    let clients = env_u64("TARA_SOAK_CLIENTS", 64) as usize;
    let sample = Duration::from_secs(env_u64("TARA_SOAK_SAMPLE_SECONDS", 10));
    let description = Description::embedded();
    let cluster = Cluster::start(&description, |_| Coordination::default()).expect("the cluster starts");
    workload::setup(&cluster, description.pool_znodes, description.payload_bytes).expect("setup");
    // One steady set of clients for the whole run: a long-running service under constant load.
    let run = Workload {
        clients,
        duration: Duration::from_secs(seconds),
        payload_bytes: description.payload_bytes,
        pool_znodes: description.pool_znodes,
        seed: 1,
        progress: false,
        sample_ms: None,
    };
    let start = Instant::now();
    let done = AtomicBool::new(false);
    let control = cluster.control().clone();
    let samples = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample_memory(&control, start, sample, &done));
        let summary = workload::run(&cluster, &run).expect("the workload runs");
        done.store(true, Ordering::Release);
        assert_eq!(summary.errors, 0, "wrong answers");
        println!("{} commands, {:.0} ops/s", summary.completed, summary.throughput_ops);
        sampler.join().expect("the sampler")
    });
    assert!(cluster.quiesce(Duration::from_secs(60)), "executors did not converge");
    assert!(cluster.stop().digests_agree(), "executor digests differ after the soak");
    write_results(&samples);
}

/// (seconds, resident KiB, commands executed) every `every` until `done`.
fn sample_memory(control: &Control, start: Instant, every: Duration, done: &AtomicBool) -> Vec<(f64, u64, u64)> {
    let executed = || control.stage_stats(Stage::Executor).map(|(_, s)| ReplicaStats::get(&s.count)).max().unwrap_or(0);
    let mut samples = Vec::new();
    println!("{:>8} {:>12} {:>14}", "seconds", "rss_kib", "commands");
    while !done.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(200));
        if start.elapsed().as_secs_f64() < (samples.len() + 1) as f64 * every.as_secs_f64() {
            continue;
        }
        let sample = (start.elapsed().as_secs_f64(), rss_kib(), executed());
        println!("{:>8.0} {:>12} {:>14}", sample.0, sample.1, sample.2);
        let _ = std::io::stdout().flush();
        samples.push(sample);
    }
    samples
}

fn write_results(samples: &[(f64, u64, u64)]) {
    // Single samples swing by about 10% as the allocator takes and returns pages, so the figure
    // compares means over a minute: the minute after the first (warm-up: the pool, windows and
    // caches fill during the first minute) with the last minute.
    let end_s = samples.last().map_or(0.0, |s| s.0);
    let mean = |from: f64, to: f64| {
        let inside: Vec<u64> = samples.iter().filter(|s| s.0 >= from && s.0 <= to).map(|s| s.1).collect();
        inside.iter().sum::<u64>() as f64 / inside.len().max(1) as f64
    };
    let (first, last) = (mean(60.0, 120.0), mean(end_s - 60.0, end_s));
    let growth = if first > 0.0 { 100.0 * (last - first) / first } else { 0.0 };
    println!(
        "\nresident memory: mean {first:.0} KiB over the second minute, {last:.0} KiB over the last: {growth:+.1}% \
         (goal: at most +5%)"
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("papers");
    let mut csv = String::from("seconds,rss_kib,commands\n");
    for (t, rss, commands) in samples {
        csv.push_str(&format!("{t:.0},{rss},{commands}\n"));
    }
    let _ = std::fs::write(dir.join("soak.csv"), csv);
    let series = [tara::cluster::plot::Series {
        label: "resident memory".into(),
        points: samples.iter().map(|s| (s.0, s.1 as f64 / 1024.0)).collect(),
    }];
    match tara::cluster::plot::line_chart(
        &dir.join("soak.svg"),
        "soak: resident memory under full load",
        "seconds",
        "MiB",
        &series,
    ) {
        Ok(()) => println!("wrote papers/soak.csv and papers/soak.svg"),
        Err(e) => eprintln!("plot failed: {e}"),
    }
}
