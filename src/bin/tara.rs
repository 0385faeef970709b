//! The `tara` command: run an embedded TARA cluster with the paper's workload, and benchmark it
//! under scheduled faults.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tara::app::coordination::Coordination;
use tara::cluster::faults::{self, Fault};
use tara::cluster::plot::{Series, line_chart};
use tara::cluster::workload::{self, Summary, Workload};
use tara::cluster::{Cluster, Description};

/// mimalloc: workers allocate tuples that other workers free; glibc's allocator spends a large
/// share of the CPU consolidating such chunks (measured in benches/throughput.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Crash-tolerant state-machine replication as a timely dataflow (TARA).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start an embedded cluster replicating the coordination service and run closed-loop
    /// clients against it (half `set data`, half `get data` on a shared pool of znodes).
    Demo {
        /// How long to run the workload, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Closed-loop clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Description file; default: dataflows/embedded-f1.toml (built in if the file is absent).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Crash a replica during the run: STAGE:REPLICA@CRASH_MS[+RESTART_AFTER_MS]
        /// (repeatable; adds to the description's [[fault]] list).
        #[arg(long = "fault")]
        faults: Vec<Fault>,
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Like `demo`, and record the throughput every 100 ms into a CSV file and an SVG plot,
    /// with the time to recover from each fault (the paper's Figure 8 with dataflows/fig8.toml).
    Bench {
        /// Description file; default: dataflows/embedded-f1.toml.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Closed-loop clients (default: the description's bench_clients).
        #[arg(long)]
        clients: Option<usize>,
        /// Seconds to run (default: the description's bench_seconds).
        #[arg(long)]
        seconds: Option<u64>,
        /// Crash a replica during the run (repeatable): STAGE:REPLICA@CRASH_MS[+RESTART_AFTER_MS].
        #[arg(long = "fault")]
        faults: Vec<Fault>,
        /// Where to write <description>-throughput.csv and .svg (default: papers/ if present).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

const DEFAULT_CONFIG: &str = "dataflows/embedded-f1.toml";

fn load(config: Option<&Path>) -> Result<Description, String> {
    match config {
        Some(path) => Description::from_file(path).map_err(|e| e.to_string()),
        None if Path::new(DEFAULT_CONFIG).exists() => {
            Description::from_file(Path::new(DEFAULT_CONFIG)).map_err(|e| e.to_string())
        }
        None => Ok(Description::embedded()),
    }
}

/// What one run needs.
struct Run {
    description: Description,
    clients: usize,
    seconds: u64,
    faults: Vec<Fault>,
    json: bool,
    sample_ms: Option<u64>,
}

/// Starts the cluster, runs the workload with the faults, stops it, checks agreement.
fn execute(run: &Run) -> Result<Summary, String> {
    if run.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    let d = &run.description;
    let cluster = Cluster::start(d, |_| Coordination::default()).map_err(|e| e.to_string())?;
    if !run.json {
        eprintln!(
            "tara: f = {}, {} workers, batch_size {}, window {}, {} clients for {} s{}",
            d.f,
            d.workers,
            d.batch_size,
            d.window,
            run.clients,
            run.seconds,
            if run.faults.is_empty() { String::new() } else { format!(", {} faults", run.faults.len()) }
        );
    }
    workload::setup(&cluster, d.pool_znodes, d.payload_bytes)?;
    let workload = Workload {
        clients: run.clients,
        duration: Duration::from_secs(run.seconds),
        payload_bytes: d.payload_bytes,
        pool_znodes: d.pool_znodes,
        seed: 42,
        progress: !run.json,
        sample_ms: run.sample_ms,
    };
    let scheduler = faults::schedule(cluster.control().clone(), run.faults.clone());
    let mut summary = workload::run(&cluster, &workload).map_err(|e| e.to_string())?;
    for fault in run.faults.iter().filter(|f| f.restart_after_ms.is_none()) {
        // A replica that stays down would keep its executor behind: bring it back to compare.
        let _ = cluster.control().restart(fault.stage, fault.replica);
    }
    let quiet = cluster.quiesce(Duration::from_secs(30));
    summary.digests_agree = quiet && cluster.stop().digests_agree();
    let _ = scheduler.join();
    Ok(summary)
}

fn print_summary(summary: &Summary, json: bool, extra: serde_json::Value) -> Result<(), String> {
    if json {
        let mut value = serde_json::to_value(summary).map_err(|e| e.to_string())?;
        if let (Some(object), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            object.extend(extra.clone());
        }
        println!("{value}");
    } else {
        println!("executed      {} commands", summary.executed);
        println!("throughput    {:.0} ops/s", summary.throughput_ops);
        println!("latency       p50 {} us, p99 {} us", summary.p50_us, summary.p99_us);
        println!("digests agree {}", summary.digests_agree);
        if summary.errors > 0 {
            println!("wrong answers {}", summary.errors);
        }
    }
    Ok(())
}

fn faults_of(description: &Description, extra: Vec<Fault>) -> Result<Vec<Fault>, String> {
    let params = description.params().map_err(|e| e.to_string())?;
    let mut faults = description.faults(&params).map_err(|e| e.to_string())?;
    faults.extend(extra);
    Ok(faults)
}

fn demo(seconds: u64, clients: usize, config: Option<PathBuf>, faults: Vec<Fault>, json: bool) -> Result<bool, String> {
    let description = load(config.as_deref())?;
    let faults = faults_of(&description, faults)?;
    let summary = execute(&Run { description, clients, seconds, faults, json, sample_ms: None })?;
    print_summary(&summary, json, serde_json::Value::Null)?;
    Ok(summary.digests_agree && summary.errors == 0)
}

/// After each crash: how long until the throughput is back at 90% of the two seconds before it.
fn recoveries(timeline: &[(f64, f64)], faults: &[Fault], view_timeout_ms: u64) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    for fault in faults {
        let at = fault.crash_at_ms as f64 / 1000.0;
        let before: Vec<f64> = timeline.iter().filter(|(t, _)| *t < at && *t >= at - 2.0).map(|(_, r)| *r).collect();
        if before.is_empty() {
            continue;
        }
        let baseline = before.iter().sum::<f64>() / before.len() as f64;
        // The outage shows as a sample below half the baseline (a sample that ends just after
        // the crash still holds work from before it); recovered at the first sample after that
        // back at 90% of the baseline. No outage: no recovery time to measure.
        let after: Vec<&(f64, f64)> = timeline.iter().filter(|(t, _)| *t > at).collect();
        let outage = after.iter().position(|(t, r)| *r < 0.5 * baseline && *t < at + 2.0);
        let back = outage.and_then(|o| after[o..].iter().find(|(_, r)| *r >= 0.9 * baseline)).map(|(t, _)| *t);
        let recovery_ms = back.map(|t| ((t - at) * 1000.0).max(0.0));
        found.push(serde_json::json!({
            "fault": format!("{}:{}@{}", fault.stage.name(), fault.replica, fault.crash_at_ms),
            "baseline_ops": baseline.round(),
            "recovery_ms": recovery_ms.map(|r| r.round()),
            "view_timeouts": recovery_ms.map(|r| (r / view_timeout_ms as f64 * 100.0).round() / 100.0),
        }));
    }
    found
}

fn bench(
    config: Option<PathBuf>,
    clients: Option<usize>,
    seconds: Option<u64>,
    faults: Vec<Fault>,
    out: Option<PathBuf>,
    json: bool,
) -> Result<bool, String> {
    let description = load(config.as_deref())?;
    let faults = faults_of(&description, faults)?;
    let clients = clients.unwrap_or(description.bench_clients);
    let seconds = seconds.unwrap_or(description.bench_seconds);
    let view_timeout_ms = description.view_timeout_ms;
    let run = Run { description, clients, seconds, faults: faults.clone(), json, sample_ms: Some(100) };
    let summary = execute(&run)?;
    let stem = config.as_deref().and_then(|p| p.file_stem()).and_then(|s| s.to_str()).unwrap_or("embedded-f1");
    let dir =
        out.unwrap_or_else(|| if Path::new("papers").is_dir() { PathBuf::from("papers") } else { PathBuf::from(".") });
    let (csv, svg) = (dir.join(format!("{stem}-throughput.csv")), dir.join(format!("{stem}-throughput.svg")));
    write_timeline(&summary.timeline, &faults, &csv, &svg)?;
    let found = recoveries(&summary.timeline, &faults, view_timeout_ms);
    if !json {
        for r in &found {
            println!(
                "after {}: back at 90% of {} ops/s in {} ms ({} view timeouts)",
                r["fault"], r["baseline_ops"], r["recovery_ms"], r["view_timeouts"]
            );
        }
        println!("wrote {} and {}", csv.display(), svg.display());
    }
    print_summary(&summary, json, serde_json::json!({ "recoveries": found, "csv": csv, "plot": svg }))?;
    Ok(summary.digests_agree && summary.errors == 0)
}

fn write_timeline(timeline: &[(f64, f64)], faults: &[Fault], csv: &Path, svg: &Path) -> Result<(), String> {
    let mut text = String::from("seconds,ops_per_second\n");
    for (t, rate) in timeline {
        text.push_str(&format!("{t:.1},{rate:.0}\n"));
    }
    std::fs::write(csv, text).map_err(|e| format!("cannot write {}: {e}", csv.display()))?;
    let top = timeline.iter().map(|(_, r)| *r).fold(0.0, f64::max) / 1000.0;
    let mut series =
        vec![Series { label: "throughput".into(), points: timeline.iter().map(|(t, r)| (*t, r / 1000.0)).collect() }];
    for f in faults {
        let at = f.crash_at_ms as f64 / 1000.0;
        series.push(Series {
            label: format!("crash {} {}", f.stage.name(), f.replica),
            points: vec![(at, 0.0), (at, top)],
        });
        if let Some(after) = f.restart_after_ms {
            let back = (f.crash_at_ms + after) as f64 / 1000.0;
            series.push(Series {
                label: format!("restart {} {}", f.stage.name(), f.replica),
                points: vec![(back, 0.0), (back, top)],
            });
        }
    }
    line_chart(svg, "throughput per 100 ms", "seconds", "k ops/s", &series)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Demo { seconds, clients, config, faults, json } => demo(seconds, clients, config, faults, json),
        Command::Bench { config, clients, seconds, faults, out, json } => {
            bench(config, clients, seconds, faults, out, json)
        }
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}
