//! Partitioned consensus (paper Section IV) without the throttle: throughput of P = 1, 2 and 4
//! ordering groups on this machine, with load spread over every partition and with skewed load
//! (every client in partition 0, the others idle and filled with no-ops). Runs are interleaved
//! round by round so that machine noise hits every configuration alike; the figure is the ratio
//! to P = 1 of the same round. Clients are closed-loop inside the dataflow.
//!
//! `cargo bench --bench partitions`; `TARA_BENCH_CLIENTS=64`, `TARA_BENCH_SECONDS=3`,
//! `TARA_BENCH_ROUNDS=2`, `TARA_BENCH_CONFIGS=1,2,4,2s,4s` (P, `s` for skewed load). Writes `papers/partitions.csv` and `papers/partitions.svg`.

#[allow(dead_code)]
#[path = "common/closed_loop.rs"]
mod closed_loop;
#[allow(dead_code)]
#[path = "common/tara_loop.rs"]
mod tara_loop;

use std::io::Write;
use std::time::Duration;

use tara::app::coordination::{CoordOp, Coordination};
use tara::cluster::plot::{Series, line_chart};
use tara::protocol::Params;
use tara_loop::Ops;

/// The same allocator as the `tara` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn pool() -> Coordination {
    let mut c = Coordination::default();
    for i in 0..1000 {
        let _ = c.apply(CoordOp::Create { path: format!("/{i}"), data: vec![0; 64], sequential: false });
    }
    c
}

/// `count` client ids, spread over every partition or all in partition 0.
fn clients(count: usize, partitions: usize, skewed: bool) -> Vec<u64> {
    let stride = if skewed { partitions as u64 } else { 1 };
    (1..=count as u64).map(|c| c * stride).collect()
}

fn main() {
    let (n, rounds) = (env("TARA_BENCH_CLIENTS", 64), env("TARA_BENCH_ROUNDS", 2));
    let seconds = Duration::from_secs(env("TARA_BENCH_SECONDS", 3) as u64);
    // `TARA_BENCH_CONFIGS=1,2,4,2s,4s`: P, and `s` for skewed load.
    let configs: Vec<(usize, bool)> = std::env::var("TARA_BENCH_CONFIGS")
        .unwrap_or_else(|_| "1,2,4,2s,4s".into())
        .split(',')
        .filter_map(|c| Some((c.trim().trim_end_matches('s').parse().ok()?, c.ends_with('s'))))
        .collect();
    let mut rows: Vec<(usize, usize, bool, f64, u64)> = Vec::new();
    println!("{:>5} {:>2} {:>8} {:>12} {:>9} {:>10}", "round", "P", "load", "ops/s", "p50_us", "vs P = 1");
    for round in 1..=rounds {
        let mut base = None;
        for &(partitions, skewed) in &configs {
            let params = Params { partitions, batch_size: 64, ..Params::default() };
            let ids = clients(n, partitions, skewed);
            let m =
                tara_loop::run_clients(ids, params, Ops::Coordination, |_| pool(), Duration::from_millis(500), seconds);
            let base = *base.get_or_insert(m.ops_per_second);
            let load = if skewed { "skewed" } else { "spread" };
            let ratio = m.ops_per_second / base;
            println!("{round:>5} {partitions:>2} {load:>8} {:>12.0} {:>9} {ratio:>10.2}", m.ops_per_second, m.p50_us);
            let _ = std::io::stdout().flush();
            rows.push((round, partitions, skewed, m.ops_per_second, m.p50_us));
        }
    }
    if let Err(e) = write(&rows, n) {
        eprintln!("could not write papers/partitions.*: {e}");
    }
}

fn write(rows: &[(usize, usize, bool, f64, u64)], clients: usize) -> Result<(), String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("papers");
    let mut csv = String::from("round,partitions,load,clients,ops_per_second,p50_us\n");
    for (round, p, skewed, ops, p50) in rows {
        let load = if *skewed { "skewed" } else { "spread" };
        csv.push_str(&format!("{round},{p},{load},{clients},{ops:.0},{p50}\n"));
    }
    std::fs::write(dir.join("partitions.csv"), csv).map_err(|e| e.to_string())?;
    let series: Vec<Series> = [false, true]
        .iter()
        .map(|&skewed| {
            let mut points: Vec<(f64, f64)> = Vec::new();
            for p in [1usize, 2, 4] {
                let ops: Vec<f64> =
                    rows.iter().filter(|r| r.1 == p && (r.2 == skewed || p == 1)).map(|r| r.3 / 1000.0).collect();
                if !ops.is_empty() {
                    points.push((p as f64, ops.iter().sum::<f64>() / ops.len() as f64));
                }
            }
            let label = if skewed { "skewed: every client in partition 0" } else { "spread over every partition" };
            Series { label: label.into(), points }
        })
        .collect();
    let title = format!("partitions without throttle, {clients} clients, coordination service, 2-core machine");
    line_chart(&dir.join("partitions.svg"), &title, "partitions P", "k ops/s (mean of rounds)", &series)?;
    println!("wrote papers/partitions.csv and papers/partitions.svg");
    Ok(())
}
