//! tara against openraft on the same closed-loop workload, measured in one run on one machine.
//!
//! ```sh
//! cargo run --release --manifest-path benches/compare/Cargo.toml
//! ```
//!
//! Every client keeps exactly one write outstanding and sends the next when it is answered;
//! every write carries a 64-byte payload to a trivial state machine (it counts writes and keeps
//! the last payload). Systems:
//!
//! - `openraft (in-memory)`: three nodes in one process as openraft's own minimal benchmark
//!   builds them (in-memory log and state machine, function-call network), servers on a tokio
//!   runtime with 2 worker threads, clients on one more thread. Nothing is written to disk.
//! - `tara non-durable`: the embedded f = 1 cluster (`Description::embedded()`, one timely
//!   worker) with `durable_records = false`; clients in one `ClientPool` on one thread.
//! - `tara durable`: the same with the default `durable_records = true` (committers fsync their
//!   record log before commits leave).
//! - `tara coordination (durable)`: the coordination service, `set data` of 64 bytes on a
//!   pre-created pool of znodes.
//! - `tara over TCP (coordination, durable)`: the same workload against the three processes of
//!   `dataflows/local-f1.toml`, started with the repository's `tara cluster` (the release binary,
//!   built if missing), clients over TCP to every front end.
//! - `tara core (clients in the dataflow)`: the embedded shape with records not durable and the
//!   clients inside the dataflow (no thread outside timely): what the embedded path is measured
//!   against.
//!
//! After the sweep, `idle` measures what the three processes of `dataflows/local-f1.toml` cost
//! while they serve nothing but the supervisor's probe (CPU per process, wake-ups), and the
//! latency of the first command after an idle period against the steady median
//! (`compare-idle.csv`).
//!
//! Each point starts a fresh cluster, warms up, then measures. For each client count every
//! system runs once, one after another (the order rotates per round); the whole sweep repeats
//! for every round and the table reports the median per (system, clients).
//!
//! Environment:
//! - `COMPARE_CLIENTS` (default `1,16,64,256`): client counts.
//! - `COMPARE_SECONDS` (default 3): measured seconds per point.
//! - `COMPARE_WARMUP_MS` (default 500): warm-up per point, not measured.
//! - `COMPARE_ROUNDS` (default 2): sweeps.
//! - `COMPARE_TARA_CONFIG` (default: the built-in embedded description): a description file
//!   for the tara side (its `durable_records` is set per system).
//! - `COMPARE_SYSTEMS` (default all): which systems run, by short name (`openraft`,
//!   `non-durable`, `durable`, `coordination`, `tcp`, `core`, and `idle` for the idle
//!   measurement), comma-separated.
//! - `COMPARE_IDLE_SECONDS` (default 10): how long the idle three-process cluster is measured.
//! - `COMPARE_OUT` (default `papers/` of the repository): where `compare.csv`, `compare.json`
//!   and `compare.svg` go.

mod core_side;
mod idle_side;
mod raft;
mod report;
mod tara_side;
mod tcp_side;

#[allow(dead_code)]
#[path = "../../common/closed_loop.rs"]
mod closed_loop;
#[allow(dead_code)]
#[path = "../../common/tara_loop.rs"]
mod tara_loop;

use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use tara_side::Variant;

/// One allocator for both systems: the one the `tara` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bytes of every write's payload.
const PAYLOAD_BYTES: usize = 64;

/// What one point measured.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Measurement {
    /// Writes answered per second in the measured period.
    pub ops_per_s: f64,
    /// Median latency, submit to answer, in microseconds.
    pub p50_us: u64,
    /// 99th-percentile latency in microseconds.
    pub p99_us: u64,
    /// Writes answered in the measured period.
    pub completed: u64,
    /// Retransmissions among them (tara clients resend after the retry timeout; openraft: 0).
    pub retransmissions: u64,
}

impl Measurement {
    /// The measurement of latencies recorded over `measured`.
    pub fn from_histogram(latency: &Histogram<u64>, measured: Duration, retransmissions: u64) -> Measurement {
        Measurement {
            ops_per_s: latency.len() as f64 / measured.as_secs_f64(),
            p50_us: latency.value_at_quantile(0.5),
            p99_us: latency.value_at_quantile(0.99),
            completed: latency.len(),
            retransmissions,
        }
    }
}

/// A system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// openraft, in memory.
    OpenRaft,
    /// tara, embedded.
    Tara(Variant),
    /// tara over TCP: three processes of `dataflows/local-f1.toml`.
    Tcp,
    /// tara's dataflow core: clients inside the dataflow.
    Core,
}

impl System {
    /// Every system, in the order of the table.
    pub const ALL: [System; 6] = [
        System::OpenRaft,
        System::Tara(Variant::NonDurable),
        System::Tara(Variant::Durable),
        System::Tara(Variant::Coordination),
        System::Tcp,
        System::Core,
    ];

    /// The name printed and plotted.
    pub fn label(self) -> &'static str {
        match self {
            System::OpenRaft => "openraft (in-memory)",
            System::Tara(Variant::NonDurable) => "tara non-durable",
            System::Tara(Variant::Durable) => "tara durable",
            System::Tara(Variant::Coordination) => "tara coordination (durable)",
            System::Tcp => "tara over TCP (coordination, durable)",
            System::Core => "tara core (clients in the dataflow)",
        }
    }

    /// The name `COMPARE_SYSTEMS` knows it by.
    pub fn short(self) -> &'static str {
        match self {
            System::OpenRaft => "openraft",
            System::Tara(Variant::NonDurable) => "non-durable",
            System::Tara(Variant::Durable) => "durable",
            System::Tara(Variant::Coordination) => "coordination",
            System::Tcp => "tcp",
            System::Core => "core",
        }
    }

    /// Runs one point.
    fn run(self, clients: usize, warmup: Duration, measured: Duration) -> Result<Measurement, String> {
        match self {
            System::OpenRaft => raft::run(clients, PAYLOAD_BYTES, warmup, measured),
            System::Tara(variant) => tara_side::run(variant, clients, PAYLOAD_BYTES, warmup, measured),
            System::Tcp => tcp_side::run(clients, PAYLOAD_BYTES, warmup, measured),
            System::Core => core_side::run(clients, warmup, measured),
        }
    }
}

/// One point of one round.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// The system's label.
    pub system: &'static str,
    /// Closed-loop clients.
    pub clients: usize,
    /// The round, from 1.
    pub round: usize,
    /// What it measured.
    #[serde(flatten)]
    pub measurement: Measurement,
}

/// The benchmark's settings, as read from the environment.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Client counts.
    pub clients: Vec<usize>,
    /// Measured seconds per point.
    pub seconds: f64,
    /// Warm-up seconds per point.
    pub warmup_seconds: f64,
    /// Sweeps.
    pub rounds: usize,
    /// Payload bytes per write.
    pub payload_bytes: usize,
    /// The openraft release.
    pub openraft_version: &'static str,
    /// Where the files go.
    #[serde(skip)]
    pub out: PathBuf,
}

/// `name` parsed, or `default` if unset; an error if set but malformed.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(text) => text.trim().parse().map_err(|_| format!("{name}={text:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

impl Settings {
    /// The settings from `COMPARE_*` variables.
    fn from_env() -> Result<Settings, String> {
        let list = std::env::var("COMPARE_CLIENTS").unwrap_or_else(|_| "1,16,64,256".into());
        let clients = list
            .split(',')
            .map(|c| c.trim().parse::<usize>().ok().filter(|&c| c > 0))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("COMPARE_CLIENTS={list:?}: expected positive numbers separated by commas"))?;
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let repo = repo.canonicalize().unwrap_or(repo);
        let out = std::env::var_os("COMPARE_OUT").map_or_else(|| repo.join("papers"), PathBuf::from);
        Ok(Settings {
            clients,
            seconds: env_or("COMPARE_SECONDS", 3.0f64)?.max(0.1),
            warmup_seconds: env_or::<f64>("COMPARE_WARMUP_MS", 500.0)?.max(0.0) / 1000.0,
            rounds: env_or("COMPARE_ROUNDS", 2usize)?.max(1),
            payload_bytes: PAYLOAD_BYTES,
            openraft_version: raft::VERSION,
            out,
        })
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("compare: {e}");
        std::process::exit(1);
    }
}

/// The name `COMPARE_SYSTEMS` knows the idle measurement by.
const IDLE: &str = "idle";

/// The systems named in `COMPARE_SYSTEMS` (short names, comma-separated), or all of them, and
/// whether the idle measurement runs.
fn selected_systems() -> Result<(Vec<System>, bool), String> {
    let Ok(list) = std::env::var("COMPARE_SYSTEMS") else { return Ok((System::ALL.to_vec(), true)) };
    let names: Vec<&str> = list.split(',').map(str::trim).collect();
    let systems = names
        .iter()
        .filter(|name| **name != IDLE)
        .map(|name| {
            System::ALL.into_iter().find(|s| s.short() == *name).ok_or_else(|| {
                let known: Vec<&str> = System::ALL.iter().map(|s| s.short()).chain([IDLE]).collect();
                format!("COMPARE_SYSTEMS: unknown system {name:?}; known: {}", known.join(", "))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((systems, names.contains(&IDLE)))
}

/// Lets the previous point's disk work finish before the next point starts: its state
/// directory was removed (discards) and its dirty pages are still being written, which slowed
/// whatever ran next by up to a third.
fn settle() {
    // SAFETY: sync() takes no arguments and only flushes file system buffers.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(300));
}

/// The interleaved sweep, then the report.
fn run() -> Result<(), String> {
    let settings = Settings::from_env()?;
    let (warmup, measured) =
        (Duration::from_secs_f64(settings.warmup_seconds), Duration::from_secs_f64(settings.seconds));
    let (systems, idle) = selected_systems()?;
    let idle_seconds = env_or("COMPARE_IDLE_SECONDS", 10.0f64)?;
    let points = settings.rounds * settings.clients.len() * systems.len();
    eprintln!(
        "compare: {points} points of {:.1} s + {:.1} s warm-up; clients {:?}, {} rounds; openraft {}",
        settings.seconds,
        settings.warmup_seconds,
        settings.clients,
        settings.rounds,
        raft::VERSION
    );
    let mut runs = Vec::new();
    for round in 1..=settings.rounds {
        for &clients in &settings.clients {
            for i in 0..systems.len() {
                // Rotate the order per round, so no system always runs first after a change.
                let system = systems[(i + round - 1) % systems.len()];
                settle();
                eprint!("[round {round}/{}] clients {clients:>4}  {:<28} ", settings.rounds, system.label());
                let measurement =
                    system.run(clients, warmup, measured).map_err(|e| format!("{}: {e}", system.label()))?;
                eprintln!(
                    "{:>9.0} ops/s  p50 {:>6} us  p99 {:>6} us",
                    measurement.ops_per_s, measurement.p50_us, measurement.p99_us
                );
                runs.push(Run { system: system.label(), clients, round, measurement });
            }
        }
    }
    let idle = match idle && idle_seconds > 0.0 {
        true => {
            eprintln!("[idle] three processes of dataflows/local-f1.toml, {idle_seconds:.0} s without clients");
            let idle = idle_side::run(Duration::from_secs_f64(idle_seconds)).map_err(|e| format!("idle: {e}"))?;
            eprintln!("[idle] {idle:?}");
            Some(idle)
        }
        false => None,
    };
    report::write(&settings, &runs, idle.as_ref())
}
