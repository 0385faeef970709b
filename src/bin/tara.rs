//! The `tara` command: run an embedded TARA cluster with the paper's workload.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tara::app::coordination::Coordination;
use tara::cluster::workload::{self, Workload};
use tara::cluster::{Cluster, Description};

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
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// mimalloc: workers allocate tuples that other workers free; glibc's allocator spends a large
/// share of the CPU consolidating such chunks (measured in benches/throughput.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_CONFIG: &str = "dataflows/embedded-f1.toml";

fn load(config: Option<PathBuf>) -> Result<Description, String> {
    match config {
        Some(path) => Description::from_file(&path).map_err(|e| e.to_string()),
        None if std::path::Path::new(DEFAULT_CONFIG).exists() => {
            Description::from_file(std::path::Path::new(DEFAULT_CONFIG)).map_err(|e| e.to_string())
        }
        None => Ok(Description::embedded()),
    }
}

fn demo(seconds: u64, clients: usize, config: Option<PathBuf>, json: bool) -> Result<bool, String> {
    if clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    let description = load(config)?;
    let cluster = Cluster::start(&description, |_| Coordination::default()).map_err(|e| e.to_string())?;
    if !json {
        eprintln!(
            "tara demo: f = {}, {} workers, batch_size {}, window {}, {clients} clients for {seconds} s",
            description.f, description.workers, description.batch_size, description.window
        );
    }
    workload::setup(&cluster, description.pool_znodes, description.payload_bytes)?;
    let run = Workload {
        clients,
        duration: Duration::from_secs(seconds),
        payload_bytes: description.payload_bytes,
        pool_znodes: description.pool_znodes,
        seed: 42,
        progress: !json,
    };
    let mut summary = workload::run(&cluster, &run).map_err(|e| e.to_string())?;
    let quiet = cluster.quiesce(Duration::from_secs(30));
    summary.digests_agree = quiet && cluster.stop().digests_agree();
    if json {
        println!("{}", serde_json::to_string(&summary).map_err(|e| e.to_string())?);
    } else {
        println!("executed      {} commands", summary.executed);
        println!("throughput    {:.0} ops/s", summary.throughput_ops);
        println!("latency       p50 {} us, p99 {} us", summary.p50_us, summary.p99_us);
        println!("digests agree {}", summary.digests_agree);
        if summary.errors > 0 {
            println!("wrong answers {}", summary.errors);
        }
    }
    Ok(summary.digests_agree && summary.errors == 0)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Demo { seconds, clients, config, json } => demo(seconds, clients, config, json),
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
