//! Throughput and latency of tara against bare timely with TARA's message pattern, measured in
//! the same run on the same machine (absolute numbers on shared machines are noisy; the ratio is
//! the figure). Clients are closed-loop and live inside the dataflow for both.
//!
//! `cargo bench --bench throughput`; `TARA_BENCH_CLIENTS=1,64,256`, `TARA_BENCH_SECONDS=3`.
//! Writes `papers/throughput.csv` and `papers/throughput.svg`.

#[path = "common/bare.rs"]
mod bare;
#[path = "common/closed_loop.rs"]
mod closed_loop;
#[path = "common/tara_loop.rs"]
mod tara_loop;

use std::io::Write;
use std::time::Duration;

use closed_loop::Measurement;
use tara::app::coordination::{CoordOp, Coordination};
use tara::protocol::Params;
use tara_loop::{Counter, Ops};

/// The same allocator as the `tara` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One configuration to measure.
type Run = Box<dyn Fn() -> Measurement>;

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name).unwrap_or_else(|_| default.into()).split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

fn pool() -> Coordination {
    let mut c = Coordination::default();
    for i in 0..1000 {
        let _ = c.apply(CoordOp::Create { path: format!("/{i}"), data: vec![0; 64], sequential: false });
    }
    c
}

fn main() {
    let clients = env_list("TARA_BENCH_CLIENTS", "1,64,256");
    let seconds = Duration::from_secs_f64(env_list("TARA_BENCH_SECONDS", "3")[0] as f64);
    let warmup = Duration::from_millis(500);
    let batches = env_list("TARA_BENCH_BATCH", "1,64");
    let systems = std::env::var("TARA_BENCH_SYSTEMS").unwrap_or_default();
    let mut rows: Vec<(String, usize, usize, Measurement)> = Vec::new();
    println!(
        "{:<28} {:>7} {:>6} {:>12} {:>9} {:>9} {:>9}",
        "system", "clients", "batch", "ops/s", "mean_us", "p50_us", "p99_us"
    );
    for &n in &clients {
        for &batch in &batches {
            let params = Params { batch_size: batch, ..Params::default() };
            let runs: Vec<(&str, Run)> = vec![
                ("bare timely", Box::new(move || bare::run(n, batch, warmup, seconds))),
                ("tara (counter)", {
                    let params = params.clone();
                    Box::new(move || {
                        tara_loop::run(n, params.clone(), Ops::Opaque, |_| Counter::default(), warmup, seconds)
                    })
                }),
                ("tara (coordination)", {
                    let params = params.clone();
                    Box::new(move || tara_loop::run(n, params.clone(), Ops::Coordination, |_| pool(), warmup, seconds))
                }),
            ];
            for (name, run) in runs.into_iter().filter(|(name, _)| systems.is_empty() || systems.contains(name)) {
                let m = run();
                println!(
                    "{:<28} {:>7} {:>6} {:>12.0} {:>9.1} {:>9} {:>9}",
                    name, n, batch, m.ops_per_second, m.mean_us, m.p50_us, m.p99_us
                );
                let _ = std::io::stdout().flush();
                rows.push((name.to_string(), n, batch, m));
            }
        }
    }
    println!("\nratio of tara to bare timely at the same clients and batch size (goal: at least 0.40)");
    for (name, n, batch, m) in rows.iter().filter(|r| r.0 != "bare timely") {
        let base = rows.iter().find(|r| r.0 == "bare timely" && r.1 == *n && r.2 == *batch).map(|r| r.3.ops_per_second);
        if let Some(base) = base {
            println!("{name:<28} clients {n:>4} batch {batch:>3}: {:.2}", m.ops_per_second / base);
        }
    }
    write_results(&rows);
}

fn write_results(rows: &[(String, usize, usize, Measurement)]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("papers");
    let mut csv = String::from("system,clients,batch,ops_per_second,mean_us,p50_us,p99_us\n");
    for (name, n, batch, m) in rows {
        csv.push_str(&format!(
            "{name},{n},{batch},{:.0},{:.1},{},{}\n",
            m.ops_per_second, m.mean_us, m.p50_us, m.p99_us
        ));
    }
    let _ = std::fs::write(dir.join("throughput.csv"), csv);
    let series: Vec<tara::cluster::plot::Series> = ["bare timely", "tara (counter)", "tara (coordination)"]
        .iter()
        .flat_map(|name| [1usize, 64].map(|batch| (name, batch)))
        .map(|(name, batch)| tara::cluster::plot::Series {
            label: format!("{name}, batch {batch}"),
            points: rows
                .iter()
                .filter(|r| r.0 == *name && r.2 == batch)
                .map(|r| (r.3.ops_per_second / 1000.0, r.3.mean_us / 1000.0))
                .collect(),
        })
        .collect();
    let path = dir.join("throughput.svg");
    match tara::cluster::plot::line_chart(
        &path,
        "throughput vs latency (closed-loop clients)",
        "throughput (k ops/s)",
        "mean latency (ms)",
        &series,
    ) {
        Ok(()) => println!("\nwrote papers/throughput.csv and papers/throughput.svg"),
        Err(e) => eprintln!("plot failed: {e}"),
    }
}
