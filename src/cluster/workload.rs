//! The paper's workload (Section VI-B): closed-loop clients on the coordination service, each
//! reading and writing znodes of a shared pool, half `set data` and half `get data`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::embedded::Cluster;
use crate::app::coordination::{CoordError, CoordOp, CoordResponse, decode_result};
use crate::client::{Client, ClientError, ClientOptions, ClientPool, tcp};
use crate::dataflow::{ReplicaStats, Stage};

/// A cluster the workload's clients can reach: embedded, or over TCP.
pub trait Target {
    /// A new pool of clients.
    fn pool(&self) -> Result<ClientPool, ClientError>;
    /// Commands executed so far by the executor that has executed the most.
    fn executed(&self) -> u64;
}

impl Target for Cluster {
    fn pool(&self) -> Result<ClientPool, ClientError> {
        Ok(Cluster::pool(self))
    }

    fn executed(&self) -> u64 {
        self.control().stage_stats(Stage::Executor).map(|(_, s)| ReplicaStats::get(&s.count)).max().unwrap_or(0)
    }
}

/// A multi-process cluster reached through its front ends.
#[derive(Clone, Debug)]
pub struct Remote {
    /// Front ends the clients submit through (any front end takes commands).
    pub submit: Vec<String>,
    /// Front ends to ask for replica counters (every process's, where known).
    pub status: Vec<String>,
    /// The clients' options.
    pub options: ClientOptions,
}

impl Remote {
    /// The counters of every executor reachable through [`Remote::status`].
    fn executors(&self) -> impl Iterator<Item = crate::net::ReplicaStatus> + '_ {
        let status = self.status.iter().filter_map(|a| tcp::status(a, Duration::from_secs(1)).ok()).flatten();
        status.filter(|r| r.stage == Stage::Executor.name())
    }

    /// Waits until the executors reachable through [`Remote::status`] report the same position
    /// and history (and at least `expected` of them answer); false if not within `timeout`.
    pub fn executors_agree(&self, expected: usize, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        loop {
            let executors: Vec<(u64, u64)> =
                self.executors().filter(|r| !r.down).map(|r| (r.next, r.history)).collect();
            if executors.len() >= expected.max(1) && executors.windows(2).all(|w| w[0] == w[1]) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Target for Remote {
    fn pool(&self) -> Result<ClientPool, ClientError> {
        tcp::pool(&self.submit, self.options.clone())
    }

    fn executed(&self) -> u64 {
        self.executors().map(|r| r.executed).max().unwrap_or(0)
    }
}

/// Parameters of a closed-loop run.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Closed-loop clients (each has one command outstanding).
    pub clients: usize,
    /// Length of the measured run.
    pub duration: Duration,
    /// Data bytes per `set data`.
    pub payload_bytes: usize,
    /// Znodes in the shared pool.
    pub pool_znodes: usize,
    /// Seed of the clients' choices.
    pub seed: u64,
    /// Print a progress line every second (to stderr).
    pub progress: bool,
    /// Record the throughput over this interval into [`Summary::timeline`] (milliseconds).
    pub sample_ms: Option<u64>,
}

/// What a run measured. Field names are the keys of `tara demo --json`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    /// Commands executed by every executor replica during the run (setup excluded).
    pub executed: u64,
    /// Commands completed per second, as seen by the clients.
    pub throughput_ops: f64,
    /// Median latency in microseconds.
    pub p50_us: u64,
    /// 99th-percentile latency in microseconds.
    pub p99_us: u64,
    /// Whether every executor replica ended with the same state digest.
    pub digests_agree: bool,
    /// Commands the clients completed.
    pub completed: u64,
    /// Closed-loop clients.
    pub clients: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// Replies that did not match the workload's expectations (must be 0).
    pub errors: u64,
    /// (seconds since the start, commands per second over the last sample) when sampled.
    #[serde(skip)]
    pub timeline: Vec<(f64, f64)>,
}

/// The path of pool znode `i`.
fn znode(i: usize) -> String {
    format!("/pool/{i}")
}

/// Creates `/pool` and its znodes.
pub fn setup(cluster: &dyn Target, pool_znodes: usize, payload_bytes: usize) -> Result<(), String> {
    let mut client = Client::new(cluster.pool().map_err(|e| e.to_string())?);
    let mut create = |path: String| -> Result<(), String> {
        let op = CoordOp::Create { path: path.clone(), data: vec![0; payload_bytes], sequential: false };
        let bytes = client.invoke(op.encode()).map_err(|e| format!("setup of {path}: {e}"))?;
        match decode_result(&bytes)? {
            Ok(_) | Err(CoordError::NodeExists(_)) => Ok(()),
            Err(e) => Err(format!("setup of {path}: {e}")),
        }
    };
    create("/pool".into())?;
    (0..pool_znodes).try_for_each(|i| create(znode(i)))
}

struct Counters {
    completed: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

/// Runs the workload against a cluster whose pool is set up; returns the measurements.
/// `digests_agree` is left false: the caller learns it when it stops the cluster.
pub fn run(cluster: &dyn Target, workload: &Workload) -> Result<Summary, ClientError> {
    let drivers = workload.clients.div_ceil(256).clamp(1, 4);
    let counters =
        Arc::new(Counters { completed: AtomicU64::new(0), errors: AtomicU64::new(0), stop: AtomicBool::new(false) });
    let pools = (0..drivers).map(|_| cluster.pool()).collect::<Result<Vec<_>, _>>()?;
    let executed_before = cluster.executed();
    let (histograms_tx, histograms_rx) = mpsc::channel();
    let start = Instant::now();
    let mut timeline = Vec::new();
    std::thread::scope(|scope| {
        for (driver, pool) in pools.into_iter().enumerate() {
            let clients = workload.clients / drivers + usize::from(driver < workload.clients % drivers);
            let (counters, tx) = (counters.clone(), histograms_tx.clone());
            let seed = workload.seed.wrapping_add(driver as u64);
            let workload = workload.clone();
            scope.spawn(move || {
                let _ = tx.send(drive(pool, clients, &workload, seed, &counters));
            });
        }
        drop(histograms_tx);
        timeline = report_progress(workload, &counters, start);
        counters.stop.store(true, Ordering::Release);
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut latency = Histogram::<u64>::new(3).map_err(|_| ClientError::Timeout)?;
    for result in histograms_rx {
        latency.add(result?).map_err(|_| ClientError::Timeout)?;
    }
    let completed = counters.completed.load(Ordering::Acquire);
    Ok(Summary {
        executed: cluster.executed().saturating_sub(executed_before),
        throughput_ops: completed as f64 / seconds,
        p50_us: latency.value_at_quantile(0.5),
        p99_us: latency.value_at_quantile(0.99),
        digests_agree: false,
        completed,
        clients: workload.clients,
        seconds,
        errors: counters.errors.load(Ordering::Acquire),
        timeline,
    })
}

/// Prints ops/s every second until the run's time is up; samples the throughput timeline.
fn report_progress(workload: &Workload, counters: &Counters, start: Instant) -> Vec<(f64, f64)> {
    let bar = (workload.progress && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(workload.duration.as_secs().max(1));
        let style = indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}");
        bar.set_style(style.unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
        bar
    });
    let tick = Duration::from_millis(workload.sample_ms.unwrap_or(1000).clamp(10, 1000));
    let mut timeline = Vec::new();
    let (mut sampled, mut printed) = ((Instant::now(), 0u64), (Instant::now(), 0u64));
    while start.elapsed() < workload.duration {
        std::thread::sleep(tick.min(workload.duration.saturating_sub(start.elapsed())));
        let completed = counters.completed.load(Ordering::Acquire);
        if workload.sample_ms.is_some() {
            let rate = (completed - sampled.1) as f64 / sampled.0.elapsed().as_secs_f64();
            timeline.push((start.elapsed().as_secs_f64(), rate));
            sampled = (Instant::now(), completed);
        }
        if printed.0.elapsed() < Duration::from_millis(1000) && start.elapsed() < workload.duration {
            continue;
        }
        let rate = (completed - printed.1) as f64 / printed.0.elapsed().as_secs_f64();
        printed = (Instant::now(), completed);
        let line = format!("{rate:>10.0} ops/s  {completed:>10} commands");
        match &bar {
            Some(bar) => {
                bar.set_position(start.elapsed().as_secs());
                bar.set_message(line);
            }
            None if workload.progress => eprintln!("[{:>5.1}s] {line}", start.elapsed().as_secs_f64()),
            None => {}
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    timeline
}

/// One driver thread: `clients` closed-loop clients in one pool.
fn drive(
    mut pool: ClientPool,
    clients: usize,
    workload: &Workload,
    seed: u64,
    counters: &Counters,
) -> Result<Histogram<u64>, ClientError> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut latency = Histogram::<u64>::new(3).map_err(|_| ClientError::Timeout)?;
    let payload = vec![7u8; workload.payload_bytes];
    let ids: Vec<u64> = (0..clients).map(|_| pool.add_client()).collect();
    let mut reads = std::collections::HashMap::new();
    let next_op = |rng: &mut SmallRng| {
        let path = znode(rng.random_range(0..workload.pool_znodes.max(1)));
        if rng.random_bool(0.5) {
            CoordOp::SetData { path, data: payload.clone(), version: None }
        } else {
            CoordOp::GetData { path }
        }
    };
    for id in &ids {
        let op = next_op(&mut rng);
        let ticket = pool.submit(*id, op.encode())?;
        reads.insert((*id, ticket), op.is_read());
    }
    while !counters.stop.load(Ordering::Acquire) {
        let Some(done) = pool.poll(Duration::from_millis(50))? else { continue };
        let _ = latency.record(done.latency.as_micros() as u64);
        let was_read = reads.remove(&(done.client, done.timestamp)).unwrap_or(false);
        if !answer_is_valid(&done.result, was_read, workload.payload_bytes) {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        counters.completed.fetch_add(1, Ordering::Relaxed);
        let op = next_op(&mut rng);
        let ticket = pool.submit(done.client, op.encode())?;
        reads.insert((done.client, ticket), op.is_read());
    }
    Ok(latency)
}

/// A read returns pool data of the right size; a write returns a new stat.
fn answer_is_valid(result: &[u8], was_read: bool, payload_bytes: usize) -> bool {
    match decode_result(result) {
        Ok(Ok(CoordResponse::Data { data, .. })) => was_read && data.len() == payload_bytes,
        Ok(Ok(CoordResponse::Set(_))) => !was_read,
        _ => false,
    }
}
