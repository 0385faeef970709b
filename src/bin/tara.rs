//! The `tara` command: run an embedded TARA cluster with the paper's workload, benchmark it under
//! scheduled faults, run and supervise multi-process clusters, and talk to them as a client.

#[path = "tara/client_cmd.rs"]
mod client_cmd;
#[path = "tara/multi.rs"]
mod multi;
#[path = "tara/status_cmd.rs"]
mod status_cmd;

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
    ///
    /// With --partitions, measure the throughput for each number of partitions instead, one
    /// embedded cluster per run, and plot it against the partition count (the paper's Figure 7):
    ///
    ///   tara bench --config dataflows/fig7.toml --partitions 1,2,4,8 --rounds 3 --out papers
    ///
    /// writes papers/fig7.csv and papers/fig7.svg (median of the rounds per partition count).
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
        /// The folder for <description>-throughput.csv and .svg, or <description>.csv and .svg
        /// with --partitions (default: target/tara-bench, so that runs stay out of the sources).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Sweep the number of partitions (comma-separated, e.g. 1,2,4,8): one run of an
        /// embedded cluster per value and round, every other key from the description; the
        /// description must have no [[process]] entries.
        #[arg(long, value_delimiter = ',')]
        partitions: Option<Vec<usize>>,
        /// With --partitions: how many times to run every value. Rounds are interleaved (1, 2,
        /// 4, 8, 1, 2, 4, 8, ...), so that a slow phase of the machine hits every value alike.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
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
        /// Start from an empty state directory: remove `state_dir` first (only if it holds
        /// nothing but tara's replica directories). Without it, the cluster continues from the
        /// durable state of earlier runs.
        #[arg(long)]
        fresh: bool,
    },
    /// One coordination-service operation against a running cluster over TCP. Exit code: 0
    /// for an answer (`exists`: the znode exists), 1 for a service error (`exists`: it does
    /// not), 2 if the cluster cannot be reached or refuses the command.
    Client {
        /// Front ends, host:port[,host:port...] (required; before or after the operation); a
        /// command without answer is retried through the next one.
        #[arg(long, global = true)]
        connect: Option<String>,
        /// Give up after this long without an answer.
        #[arg(long, global = true, default_value_t = 10_000)]
        timeout_ms: u64,
        #[command(subcommand)]
        op: client_cmd::Op,
    },
    /// One table of every replica of a running cluster: stage, partition, view, next sequence
    /// number, stability threshold, lag behind the most advanced replica of its stage, restarts.
    Status {
        /// Front ends of every process, host:port[,host:port...].
        #[arg(long)]
        connect: String,
        /// Refresh the table until interrupted.
        #[arg(long)]
        watch: bool,
        /// How often `--watch` refreshes, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
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
    /// A running cluster: clients submit through `submit`; the executors behind `status` (every
    /// process's front end, if the cluster said which) must agree, `executors` of them at least.
    Connect {
        /// The front ends given.
        submit: Vec<String>,
        /// The front ends asked for counters.
        status: Vec<String>,
        /// Executors that must report.
        executors: usize,
    },
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
        let mut extra = String::new();
        if d.partitions > 1 {
            extra.push_str(&format!(", {} partitions", d.partitions));
        }
        if d.proposer_delay_us > 0 {
            extra.push_str(&format!(", proposers throttled to {} us", d.proposer_delay_us));
        }
        if !run.faults.is_empty() {
            extra.push_str(&format!(", {} faults", run.faults.len()));
        }
        eprintln!(
            "tara: f = {}, {} worker{}, batch_size {}, window {}{extra}, {} clients for {} s",
            d.f,
            d.workers,
            if d.workers == 1 { "" } else { "s" },
            d.batch_size,
            d.window,
            run.clients,
            run.seconds,
        );
    }
    match place {
        Where::Embedded => execute_embedded(run),
        Where::Connect { submit, status, executors } => {
            let remote = Remote { submit: submit.clone(), status: status.clone(), options: client_options(d) };
            execute_remote(run, &remote, *executors)
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
    // Refuse before the workload sends anything to whatever listens there now.
    tara::cluster::supervisor::ports_free(&processes).map_err(|e| {
        format!("cannot start the cluster of {}: {e}; to measure a running cluster, use --connect", config.display())
    })?;
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
    if !description.process.is_empty() {
        let path = config.as_deref().map_or_else(|| DEFAULT_CONFIG.into(), |p| p.display().to_string());
        return Err(format!(
            "`tara demo` runs an embedded cluster on this process's threads, but {path} describes a \
             multi-process cluster ([[process]] entries): start it with `tara cluster --config {path}` \
             and measure it with `tara bench --config {path}`"
        ));
    }
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
    let mut description = load(config.as_deref())?;
    let place = match (&connect, &config) {
        (Some(list), _) => connect_to(list, &mut description, json)?,
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
    let dir = output_dir(out)?;
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

/// The folder `tara bench` writes into: `--out`, or target/tara-bench; created if missing.
fn output_dir(out: Option<PathBuf>) -> Result<PathBuf, String> {
    let dir = out.unwrap_or_else(|| Path::new("target").join("tara-bench"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create the output folder {}: {e}", dir.display()))?;
    Ok(dir)
}

/// `tara bench --connect LIST`: the running cluster's shape and retry timeout replace the
/// description's, from the first front end that describes its cluster; its digests are compared
/// over every process's executors.
fn connect_to(list: &str, description: &mut Description, json: bool) -> Result<Where, String> {
    let submit: Vec<String> = list.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
    if submit.is_empty() {
        return Err("--connect: give at least one front-end address, host:port[,host:port...]".into());
    }
    let described = submit.iter().find_map(|a| tara::client::describe(a, Duration::from_secs(2)).ok());
    let Some(cluster) = described else {
        if !json {
            eprintln!("tara: no front end described its cluster; digests compare only the executors behind {list}");
        }
        return Ok(Where::Connect { status: submit.clone(), submit, executors: 0 });
    };
    let d = description;
    (d.f, d.partitions, d.workers, d.batch_size) = (cluster.f, cluster.partitions, cluster.workers, cluster.batch_size);
    (d.window, d.checkpoint_interval) = (cluster.window, cluster.checkpoint_interval);
    (d.client_window, d.retry_timeout_ms) = (cluster.client_window, cluster.retry_timeout_ms);
    if !json {
        eprintln!("tara: digests compare the executors of every process ({})", cluster.front_ends.join(","));
    }
    Ok(Where::Connect { submit, status: cluster.front_ends, executors: 2 * cluster.f + 1 })
}

/// The runs of one partition count in a `tara bench --partitions` sweep.
struct Point {
    partitions: usize,
    runs: Vec<Summary>,
}

impl Point {
    /// The median over the runs of `value`.
    fn median(&self, value: impl Fn(&Summary) -> f64) -> f64 {
        let mut values: Vec<f64> = self.runs.iter().map(value).collect();
        values.sort_by(f64::total_cmp);
        match values.len() {
            0 => 0.0,
            n if n % 2 == 1 => values[n / 2],
            n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        }
    }

    fn throughput(&self) -> f64 {
        self.median(|s| s.throughput_ops)
    }
}

/// `tara bench --partitions`: the throughput for each number of partitions (the paper's
/// Figure 7 with dataflows/fig7.toml), `rounds` runs per value, interleaved.
fn sweep(args: BenchArgs, partitions: &[usize], rounds: usize) -> Result<bool, String> {
    let description = load(args.config.as_deref())?;
    if args.connect.is_some() || !description.process.is_empty() {
        return Err("--partitions starts an embedded cluster for every value; a running or multi-process \
                    cluster has its partitions fixed: use a description without [[process]] entries, \
                    such as dataflows/fig7.toml"
            .into());
    }
    if partitions.is_empty() || rounds == 0 {
        return Err("--partitions needs at least one value and --rounds at least 1".into());
    }
    let with = |p: usize| Description { partitions: p, ..description.clone() };
    for p in partitions {
        with(*p).validate().map_err(|e| format!("--partitions {p}: {e}"))?;
    }
    let faults = faults_of(&description, args.faults)?;
    let clients = args.clients.unwrap_or(description.bench_clients);
    let seconds = args.seconds.unwrap_or(description.bench_seconds);
    let mut points: Vec<Point> = partitions.iter().map(|p| Point { partitions: *p, runs: Vec::new() }).collect();
    for round in 1..=rounds {
        for point in points.iter_mut() {
            let p = point.partitions;
            let run = Run {
                description: with(p),
                clients,
                seconds,
                faults: faults.clone(),
                json: args.json,
                sample_ms: None,
            };
            let summary = execute(&run, &Where::Embedded)?;
            eprintln!(
                "tara bench: round {round}/{rounds}, {p} partition(s): {:.0} ops/s, p50 {} us, p99 {} us{}",
                summary.throughput_ops,
                summary.p50_us,
                summary.p99_us,
                if summary.digests_agree { "" } else { ", the executors DISAGREE" }
            );
            point.runs.push(summary);
        }
    }
    let stem = args.config.as_deref().and_then(|p| p.file_stem()).and_then(|s| s.to_str()).unwrap_or("partitions");
    let dir = output_dir(args.out)?;
    let (csv, svg) = (dir.join(format!("{stem}.csv")), dir.join(format!("{stem}.svg")));
    write_sweep(&points, &description, &csv, &svg)?;
    report_sweep(&points, rounds, args.json, &csv, &svg)
}

/// Prints the medians, each against the first partition count, and says where the files are.
fn report_sweep(points: &[Point], rounds: usize, json: bool, csv: &Path, svg: &Path) -> Result<bool, String> {
    let all = points.iter().flat_map(|p| p.runs.iter());
    let agree = all.clone().all(|s| s.digests_agree);
    let errors: u64 = all.map(|s| s.errors).sum();
    let base = points.first().map_or(1.0, |p| p.throughput().max(1e-9));
    let first = points.first().map_or(1, |p| p.partitions);
    if json {
        let values: Vec<serde_json::Value> = points
            .iter()
            .map(|p| {
                serde_json::json!({
                    "partitions": p.partitions,
                    "ops_per_second": p.throughput().round(),
                    "p50_us": p.median(|s| s.p50_us as f64),
                    "p99_us": p.median(|s| s.p99_us as f64),
                    "speedup": (p.throughput() / base * 100.0).round() / 100.0,
                    "rounds": p.runs.iter().map(|s| s.throughput_ops.round()).collect::<Vec<f64>>(),
                })
            })
            .collect();
        let summary = serde_json::json!({
            "points": values, "rounds": rounds, "digests_agree": agree, "errors": errors, "csv": csv, "plot": svg,
        });
        println!("{summary}");
    } else {
        println!("partitions  ops/s (median of {rounds})  p50 us  p99 us  vs {first} partition(s)");
        for p in points {
            println!(
                "{:>10}  {:>20.0}  {:>6.0}  {:>6.0}  {:>5.2}",
                p.partitions,
                p.throughput(),
                p.median(|s| s.p50_us as f64),
                p.median(|s| s.p99_us as f64),
                p.throughput() / base
            );
        }
        println!("digests agree {agree}");
        if errors > 0 {
            println!("wrong answers {errors}");
        }
        println!("wrote {} and {}", csv.display(), svg.display());
    }
    Ok(agree && errors == 0)
}

/// The sweep as CSV (one line per partition count: medians, rounds, the spread of the rounds)
/// and as a plot of throughput against partitions, with the linear scaling of the first value
/// and, with a throttle, the throttle's bound for comparison.
fn write_sweep(points: &[Point], description: &Description, csv: &Path, svg: &Path) -> Result<(), String> {
    let mut text =
        String::from("partitions,ops_per_second,p50_us,p99_us,rounds,min_ops_per_second,max_ops_per_second\n");
    for p in points {
        let rates = p.runs.iter().map(|s| s.throughput_ops);
        let (min, max) = (rates.clone().fold(f64::INFINITY, f64::min), rates.fold(0.0, f64::max));
        text.push_str(&format!(
            "{},{:.0},{:.0},{:.0},{},{min:.0},{max:.0}\n",
            p.partitions,
            p.throughput(),
            p.median(|s| s.p50_us as f64),
            p.median(|s| s.p99_us as f64),
            p.runs.len()
        ));
    }
    std::fs::write(csv, text).map_err(|e| format!("cannot write {}: {e}", csv.display()))?;
    let rounds = points.first().map_or(0, |p| p.runs.len());
    let measured = points.iter().map(|p| (p.partitions as f64, p.throughput() / 1000.0)).collect();
    let mut series = vec![Series { label: format!("measured (median of {rounds})"), points: measured }];
    if let Some(first) = points.first() {
        let per_partition = first.throughput() / first.partitions as f64 / 1000.0;
        let linear = points.iter().map(|p| (p.partitions as f64, per_partition * p.partitions as f64)).collect();
        series.push(Series { label: format!("linear from {} partition(s)", first.partitions), points: linear });
    }
    let delay = description.proposer_delay_us;
    if delay > 0 {
        let bound = description.batch_size as f64 * 1e6 / delay as f64 / 1000.0;
        let points = points.iter().map(|p| (p.partitions as f64, bound * p.partitions as f64)).collect();
        series.push(Series {
            label: format!("throttle bound: P x {} command(s) per {delay} us", description.batch_size),
            points,
        });
    }
    let title = match delay {
        0 => "throughput by partitions".to_string(),
        d => format!("throughput by partitions, proposers throttled to {d} us per proposal"),
    };
    line_chart(svg, &title, "partitions", "k ops/s", &series)
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

/// Logs to stderr, filtered by RUST_LOG (else `default`); colours only on a terminal, so that
/// a log file holds no escape codes.
fn init_logs(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A process of a cluster logs its role assignment and recoveries by default; the other
    // commands only warnings, so that their progress lines stay readable. RUST_LOG overrides.
    let default = if matches!(cli.command, Command::Run { .. }) { "tara=info" } else { "warn" };
    init_logs(default);
    let outcome = match cli.command {
        Command::Demo { seconds, clients, config, faults, json } => demo(seconds, clients, config, faults, json),
        Command::Bench { config, clients, seconds, faults, out, partitions, rounds, connect, json } => {
            let args = BenchArgs { config, clients, seconds, faults, out, connect, json };
            match partitions {
                Some(partitions) => sweep(args, &partitions, rounds),
                None => bench(args),
            }
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
        Command::Cluster { config, fresh } => {
            let path = config.unwrap_or_else(|| PathBuf::from(DEFAULT_CLUSTER_CONFIG));
            Description::from_file(&path).map_err(|e| e.to_string()).and_then(|d| multi::cluster(&d, &path, fresh))
        }
        Command::Client { connect, timeout_ms, op } => match connect {
            Some(connect) => client_cmd::run(&connect, timeout_ms, op),
            None => Err("`tara client` needs --connect ADDR[,ADDR...]: the front ends of a running cluster \
                         (see the start line of `tara cluster`)"
                .into()),
        },
        Command::Status { connect, watch, interval_ms } => status_cmd::run(&connect, watch, interval_ms),
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
