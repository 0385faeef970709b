//! Multi-process clusters over TCP, measured against the embedded cluster in the same
//! run: the paper's workload (half `set data`, half `get data`) from closed-loop TCP clients
//! against three `tara run` processes under `tara cluster`'s supervisor, and the same workload on
//! an embedded cluster of three worker threads. Then real crashes: kill -9 of a process three
//! times under load, with the time from each kill to the first command answered again.
//!
//! `cargo bench --bench multi_process`; `TARA_BENCH_CLIENTS=1,16,64`, `TARA_BENCH_SECONDS=5`.
//! Writes `papers/multi-process.csv`, `papers/multi-process.svg`, `papers/kill-9.csv` and
//! `papers/kill-9.svg`.

#[allow(dead_code)]
#[path = "common/supervised.rs"]
mod supervised;

use std::path::Path;
use std::time::Duration;

use supervised::{KillPlan, Supervised, local_description, workload};
use tara::app::coordination::Coordination;
use tara::cluster::plot::{Series, line_chart};
use tara::cluster::workload::{self, Summary, Target};
use tara::cluster::{Cluster, Description};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_list(name: &str, default: &str) -> Vec<u64> {
    std::env::var(name).unwrap_or_else(|_| default.into()).split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

fn run(target: &dyn Target, description: &Description, clients: u64, seconds: u64) -> Summary {
    workload::setup(target, description.pool_znodes, description.payload_bytes).expect("setup");
    let summary = workload::run(target, &workload(clients, seconds, description, None)).expect("the workload runs");
    assert_eq!(summary.errors, 0, "wrong answers");
    summary
}

fn main() {
    let clients = env_list("TARA_BENCH_CLIENTS", "1,16,64");
    let seconds = env_list("TARA_BENCH_SECONDS", "5")[0];
    let papers = Path::new(env!("CARGO_MANIFEST_DIR")).join("papers");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = local_description(dir.path());
    let mut rows: Vec<(&str, u64, Summary)> = Vec::new();
    println!("{:<34} {:>7} {:>10} {:>8} {:>8}", "system", "clients", "ops/s", "p50_us", "p99_us");
    let embedded = Description::embedded();
    let cluster = Cluster::start(&embedded, |_| Coordination::default()).expect("the embedded cluster");
    let supervised = Supervised::start(&config);
    for &n in &clients {
        let systems: [(&str, &dyn Target, &Description); 2] = [
            ("embedded, 3 threads", &cluster, &embedded),
            ("3 processes over TCP", &supervised.remote, &supervised.description),
        ];
        for (name, target, description) in systems {
            let summary = run(target, description, n, seconds);
            println!("{name:<34} {n:>7} {:>10.0} {:>8} {:>8}", summary.throughput_ops, summary.p50_us, summary.p99_us);
            rows.push((name, n, summary));
        }
    }
    assert!(supervised.remote.executors_agree(3, Duration::from_secs(30)), "executors disagree");
    drop(cluster);
    println!("\nratio of 3 processes over TCP to the embedded cluster, same clients");
    for (n, tcp) in rows.iter().filter(|r| r.0 != "embedded, 3 threads").map(|r| (r.1, &r.2)) {
        if let Some(base) = rows.iter().find(|r| r.0 == "embedded, 3 threads" && r.1 == n) {
            println!("clients {n:>4}: {:.2}", tcp.throughput_ops / base.2.throughput_ops);
        }
    }
    write_throughput(&papers, &rows);
    match supervised::kill_9_under_load(&supervised, &papers, &KillPlan::standard(), "") {
        Ok(_) => println!("wrote papers/kill-9.csv, papers/kill-9-recovery.csv and papers/kill-9.svg"),
        Err(e) => panic!("kill -9: {e}"),
    }
}

fn write_throughput(papers: &Path, rows: &[(&str, u64, Summary)]) {
    let mut csv = String::from("system,clients,ops_per_second,p50_us,p99_us\n");
    for (name, n, s) in rows {
        // "embedded, 3 threads" holds a comma: quoted, as CSV wants.
        csv.push_str(&format!("\"{name}\",{n},{:.0},{},{}\n", s.throughput_ops, s.p50_us, s.p99_us));
    }
    let _ = std::fs::write(papers.join("multi-process.csv"), csv);
    let series: Vec<Series> = ["embedded, 3 threads", "3 processes over TCP"]
        .iter()
        .map(|name| Series {
            label: name.to_string(),
            points: rows
                .iter()
                .filter(|r| r.0 == *name)
                .map(|r| (r.2.throughput_ops / 1000.0, r.2.p50_us as f64 / 1000.0))
                .collect(),
        })
        .collect();
    let svg = papers.join("multi-process.svg");
    match line_chart(&svg, "throughput vs median latency", "throughput (k ops/s)", "p50 latency (ms)", &series) {
        Ok(()) => println!("wrote papers/multi-process.csv and papers/multi-process.svg"),
        Err(e) => eprintln!("plot failed: {e}"),
    }
}
