//! The `tara` command: run an embedded TARA cluster with the paper's workload, benchmark it under
//! scheduled faults, run and supervise multi-process clusters, and talk to them as a client.

#[path = "tara/client_cmd.rs"]
mod client_cmd;
#[path = "tara/multi.rs"]
mod multi;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tara::app::coordination::Coordination;
use tara::client::ClientOptions;
use tara::cluster::faults::{self, Fault};
use tara::cluster::plot::{Series, line_chart};
use tara::cluster::process::{ProcessOptions, RunError};
use tara::cluster::workload::{self, Remote, Summary, Target, Workload};
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
        /// Drive a running cluster over TCP through these front ends (host:port,...) instead of
        /// starting one. Without it, a description with [[process]] entries is started as a
        /// supervised local cluster and driven over TCP; otherwise an embedded cluster is used.
        #[arg(long)]
        connect: Option<String>,
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run one process of a multi-process cluster (timely's -w -n -p -h flags are accepted).
    #[command(disable_help_flag = true)]
    Run {
        /// Description file with the [[process]] list, e.g. dataflows/local-f1.toml.
        #[arg(long)]
        config: PathBuf,
        /// This process's index in the [[process]] list (timely's -p).
        #[arg(long = "process", short = 'p')]
        process: usize,
        /// Worker threads per process (timely's -w); overrides `workers`.
        #[arg(short = 'w', long = "threads")]
        threads: Option<usize>,
        /// Number of processes (timely's -n); must match the description.
        #[arg(short = 'n', long = "processes")]
        processes: Option<usize>,
        /// A timely hostfile (timely's -h): one host:port per line, in process order; replaces
        /// the `timely` addresses of the description.
        #[arg(short = 'h', long = "hostfile")]
        hostfile: Option<PathBuf>,
        /// Print help.
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
    },
    /// Start every process of a description on this host and supervise them: when one dies or
    /// the cluster stops answering, restart the whole cluster from its durable state.
    Cluster {
        /// Description file with the [[process]] list; default: dataflows/local-f1.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// One coordination-service operation against a running cluster over TCP.
    Client {
        /// Front ends, host:port[,host:port...]; a command without answer is retried through
        /// the next one.
        #[arg(long)]
        connect: String,
        /// Give up after this long without an answer.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        #[command(subcommand)]
        op: client_cmd::Op,
    },
    /// Print the TARA dataflow of a description (stages, replicas, workers, processes, loops) as
    /// Graphviz DOT.
    Graph {
        /// Description file; default: dataflows/embedded-f1.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

const DEFAULT_CONFIG: &str = "dataflows/embedded-f1.toml";
const DEFAULT_CLUSTER_CONFIG: &str = "dataflows/local-f1.toml";

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

/// Where a run's clients go.
enum Where {
    /// An embedded cluster started for the run.
    Embedded,
    /// A running cluster, through these front ends.
    Connect(Vec<String>),
    /// The description's processes, started and supervised for the run.
    Supervised(PathBuf),
}

/// Starts the cluster, runs the workload with the faults, stops it, checks agreement.
fn execute(run: &Run, place: &Where) -> Result<Summary, String> {
    if run.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    let d = &run.description;
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
    match place {
        Where::Embedded => execute_embedded(run),
        Where::Connect(addresses) => {
            let remote = Remote { submit: addresses.clone(), status: addresses.clone(), options: client_options(d) };
            execute_remote(run, &remote, 0)
        }
        Where::Supervised(config) => execute_supervised(run, config),
    }
}

fn client_options(d: &Description) -> ClientOptions {
    ClientOptions { client_window: d.client_window, retry_timeout: Duration::from_millis(d.retry_timeout_ms) }
}

fn workload_of(run: &Run) -> Workload {
    let d = &run.description;
    Workload {
        clients: run.clients,
        duration: Duration::from_secs(run.seconds),
        payload_bytes: d.payload_bytes,
        pool_znodes: d.pool_znodes,
        seed: 42,
        progress: !run.json,
        sample_ms: run.sample_ms,
    }
}

fn execute_embedded(run: &Run) -> Result<Summary, String> {
    let d = &run.description;
    let cluster = Cluster::start(d, |_| Coordination::default()).map_err(|e| e.to_string())?;
    workload::setup(&cluster, d.pool_znodes, d.payload_bytes)?;
    let scheduler = faults::schedule(cluster.control().clone(), run.faults.clone());
    let mut summary = workload::run(&cluster, &workload_of(run)).map_err(|e| e.to_string())?;
    for fault in run.faults.iter().filter(|f| f.restart_after_ms.is_none()) {
        // A replica that stays down would keep its executor behind: bring it back to compare.
        let _ = cluster.control().restart(fault.stage, fault.replica);
    }
    let quiet = cluster.quiesce(Duration::from_secs(30));
    summary.digests_agree = quiet && cluster.stop().digests_agree();
    let _ = scheduler.join();
    Ok(summary)
}

/// Runs the workload over TCP; `executors` is how many executors must report agreement.
fn execute_remote(run: &Run, remote: &Remote, executors: usize) -> Result<Summary, String> {
    if !run.faults.is_empty() {
        return Err("--fault and [[fault]] inject replica crashes into an embedded cluster; against a \
                    multi-process cluster, kill a process instead (tara cluster restarts it)"
            .into());
    }
    let d = &run.description;
    workload::setup(remote as &dyn Target, d.pool_znodes, d.payload_bytes)?;
    let mut summary = workload::run(remote, &workload_of(run)).map_err(|e| e.to_string())?;
    summary.digests_agree = remote.executors_agree(executors, Duration::from_secs(30));
    Ok(summary)
}

/// Starts the description's processes under a supervisor, runs the workload, stops them.
fn execute_supervised(run: &Run, config: &Path) -> Result<Summary, String> {
    let d = &run.description;
    let processes = d.processes(None).map_err(|e| e.to_string())?;
    let submit = d.client_addresses().map_err(|e| e.to_string())?;
    let status = processes.iter().map(|p| p.clients.clone()).collect();
    let remote = Remote { submit, status, options: client_options(d) };
    let executors = d.params().map_err(|e| e.to_string())?.executors();
    let options = multi::supervisor_options(config)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (description, flag) = (d.clone(), stop.clone());
    let supervisor = std::thread::spawn(move || tara::cluster::supervisor::supervise(&description, &options, flag));
    let summary = execute_remote(run, &remote, executors);
    stop.store(true, std::sync::atomic::Ordering::Release);
    match supervisor.join() {
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("the supervisor panicked".into()),
        Ok(Ok(_)) => {}
    }
    summary
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
    let summary = execute(&Run { description, clients, seconds, faults, json, sample_ms: None }, &Where::Embedded)?;
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

/// `tara bench` arguments.
struct BenchArgs {
    config: Option<PathBuf>,
    clients: Option<usize>,
    seconds: Option<u64>,
    faults: Vec<Fault>,
    out: Option<PathBuf>,
    connect: Option<String>,
    json: bool,
}

fn bench(args: BenchArgs) -> Result<bool, String> {
    let BenchArgs { config, clients, seconds, faults, out, connect, json } = args;
    let description = load(config.as_deref())?;
    let place = match (&connect, &config) {
        (Some(list), _) => Where::Connect(list.split(',').map(|a| a.trim().to_string()).collect()),
        (None, Some(path)) if !description.process.is_empty() => Where::Supervised(path.clone()),
        _ => Where::Embedded,
    };
    let faults = faults_of(&description, faults)?;
    let clients = clients.unwrap_or(description.bench_clients);
    let seconds = seconds.unwrap_or(description.bench_seconds);
    let view_timeout_ms = description.view_timeout_ms;
    let run = Run { description, clients, seconds, faults: faults.clone(), json, sample_ms: Some(100) };
    let summary = execute(&run, &place)?;
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
    let cli = Cli::parse();
    // A process of a cluster logs its role assignment and recoveries by default; the other
    // commands only warnings, so that their progress lines stay readable. RUST_LOG overrides.
    let default = if matches!(cli.command, Command::Run { .. }) { "tara=info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let outcome = match cli.command {
        Command::Demo { seconds, clients, config, faults, json } => demo(seconds, clients, config, faults, json),
        Command::Bench { config, clients, seconds, faults, out, connect, json } => {
            bench(BenchArgs { config, clients, seconds, faults, out, connect, json })
        }
        Command::Run { config, process, threads, processes, hostfile, help: _ } => {
            let options = ProcessOptions { index: process, threads, processes, hostfile };
            let run = Description::from_file(&config).map_err(RunError::from).and_then(|d| multi::run(&d, &options));
            return match run {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(e.exit_code())
                }
            };
        }
        Command::Cluster { config } => {
            let path = config.unwrap_or_else(|| PathBuf::from(DEFAULT_CLUSTER_CONFIG));
            Description::from_file(&path).map_err(|e| e.to_string()).and_then(|d| multi::cluster(&d, &path))
        }
        Command::Client { connect, timeout_ms, op } => client_cmd::run(&connect, timeout_ms, op),
        Command::Graph { config } => load(config.as_deref()).and_then(|d| multi::graph(&d)),
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
