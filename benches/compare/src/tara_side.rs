//! tara embedded, the library path: `Cluster::start` on the f = 1 description (one timely
//! worker thread), clients outside the dataflow in one `ClientPool` driven from this thread.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tara::app::coordination::{CoordError, CoordOp, CoordResponse, Coordination, decode_result};
use tara::app::{Application, RestoreError};
use tara::client::{Client, ClientPool};
use tara::cluster::{Cluster, Description};

use crate::Measurement;

/// What tara replicates in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The trivial state machine; committers do not sync their record log.
    NonDurable,
    /// The trivial state machine; committers fsync their record log before commits leave.
    Durable,
    /// The coordination service, `set data` on a pre-created pool of znodes; durable.
    Coordination,
}

/// The trivial state machine: counts writes and keeps the last payload (the same as the
/// openraft side's).
#[derive(Clone, Debug, Default)]
pub struct Counter {
    /// Writes applied.
    count: u64,
    /// The last write's payload.
    last: Vec<u8>,
}

impl Application for Counter {
    fn execute(&mut self, op: &[u8]) -> Vec<u8> {
        self.count += 1;
        self.last.clear();
        self.last.extend_from_slice(op);
        self.count.to_le_bytes().to_vec()
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut bytes = self.count.to_le_bytes().to_vec();
        bytes.extend_from_slice(&self.last);
        bytes
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        let (count, last) = snapshot.split_at_checked(8).ok_or_else(|| RestoreError("shorter than 8 bytes".into()))?;
        let mut word = [0u8; 8];
        word.copy_from_slice(count);
        *self = Counter { count: u64::from_le_bytes(word), last: last.to_vec() };
        Ok(())
    }
}

/// The path of pool znode `i`.
pub(crate) fn znode(i: usize) -> String {
    format!("/pool/{i}")
}

/// Runs `clients` closed-loop clients against a fresh cluster: `warmup`, then `measured`.
pub fn run(
    variant: Variant,
    clients: usize,
    payload_bytes: usize,
    warmup: Duration,
    measured: Duration,
) -> Result<Measurement, String> {
    let mut description = match std::env::var_os("COMPARE_TARA_CONFIG") {
        Some(path) => Description::from_file(std::path::Path::new(&path)).map_err(|e| e.to_string())?,
        None => Description::embedded(),
    };
    description.durable_records = variant != Variant::NonDurable;
    let pool_znodes = description.pool_znodes.max(1);
    let measurement = match variant {
        Variant::NonDurable | Variant::Durable => {
            let cluster = Cluster::start(&description, |_| Counter::default()).map_err(|e| e.to_string())?;
            let payload = vec![7u8; payload_bytes];
            let measurement = drive(cluster.pool(), clients, warmup, measured, |_| payload.clone(), |r| r.len() == 8)?;
            finish(cluster, measurement)?
        }
        Variant::Coordination => {
            let cluster = Cluster::start(&description, |_| Coordination::default()).map_err(|e| e.to_string())?;
            create_pool_znodes(&mut cluster.client(), pool_znodes, payload_bytes)?;
            let data = vec![7u8; payload_bytes];
            let op =
                |n: u64| CoordOp::SetData { path: znode(n as usize % pool_znodes), data: data.clone(), version: None };
            let is_set = |r: &[u8]| matches!(decode_result(r), Ok(Ok(CoordResponse::Set(_))));
            let measurement = drive(cluster.pool(), clients, warmup, measured, |n| op(n).encode(), is_set)?;
            finish(cluster, measurement)?
        }
    };
    Ok(measurement)
}

/// Lets the executors catch up with the commands still in flight, then stops the cluster; an
/// error if the executors disagree (a broken run is no measurement).
fn finish(cluster: Cluster, measurement: Measurement) -> Result<Measurement, String> {
    if std::env::var_os("COMPARE_COUNTERS").is_some() {
        use tara::dataflow::{ReplicaStats, Stage};
        let control = cluster.control();
        let sum = |stage| control.stage_stats(stage).map(|(_, s)| ReplicaStats::get(&s.count)).sum::<u64>();
        let (proposals, executed) = (sum(Stage::Proposer), sum(Stage::Executor) / 3);
        eprint!(" [{proposals} instances, {:.1} commands each] ", executed as f64 / proposals.max(1) as f64);
    }
    if !cluster.quiesce(Duration::from_secs(10)) {
        return Err("executors did not converge within 10 s after the run".into());
    }
    let report = cluster.stop();
    if report.aborted || !report.digests_agree() {
        return Err(format!("executors disagree or a worker panicked: {report:?}"));
    }
    Ok(measurement)
}

/// Creates `/pool` and its znodes through `client`, each with `payload_bytes` of data (a znode
/// that exists already is fine: a retried create may have taken effect).
pub(crate) fn create_pool_znodes(client: &mut Client, pool_znodes: usize, payload_bytes: usize) -> Result<(), String> {
    for path in std::iter::once("/pool".to_string()).chain((0..pool_znodes).map(znode)) {
        let op = CoordOp::Create { path: path.clone(), data: vec![0; payload_bytes], sequential: false };
        let result = client.invoke(op.encode()).map_err(|e| format!("creating {path}: {e}"))?;
        match decode_result(&result)? {
            Ok(_) => {}
            Err(CoordError::NodeExists(_)) => {}
            Err(e) => return Err(format!("creating {path}: {e}")),
        }
    }
    Ok(())
}

/// The closed loop: `clients` clients of `pool`, one command outstanding each; `op(n)` is the
/// `n`-th command's bytes, `valid` checks a result. Latencies of commands answered in the
/// measured period are recorded.
pub(crate) fn drive(
    mut pool: ClientPool,
    clients: usize,
    warmup: Duration,
    measured: Duration,
    mut op: impl FnMut(u64) -> Vec<u8>,
    valid: impl Fn(&[u8]) -> bool,
) -> Result<Measurement, String> {
    let mut latency = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let mut issued = 0u64;
    let mut errors = 0u64;
    let ids: Vec<u64> = (0..clients).map(|_| pool.add_client()).collect();
    // When each client's outstanding command was handed to `submit`: the latency is measured
    // here, as on the openraft side, and not taken from `Completion::latency`, whose clock
    // starts only once `submit` has returned.
    let mut sent: HashMap<u64, Instant> = HashMap::with_capacity(clients);
    let start = Instant::now();
    let (from, until) = (start + warmup, start + warmup + measured);
    for id in &ids {
        sent.insert(*id, Instant::now());
        pool.submit(*id, op(issued)).map_err(|e| e.to_string())?;
        issued += 1;
    }
    let mut retransmissions = 0u64;
    loop {
        let Some(done) = pool.poll(Duration::from_millis(50)).map_err(|e| e.to_string())? else {
            if Instant::now() >= until {
                break;
            }
            continue;
        };
        let now = Instant::now();
        if now >= until {
            break;
        }
        let submitted = sent.get(&done.client).copied().unwrap_or(now);
        if now >= from {
            let _ = latency.record(now.duration_since(submitted).as_micros() as u64);
            retransmissions += u64::from(done.retransmissions);
            errors += u64::from(!valid(&done.result));
        }
        sent.insert(done.client, Instant::now());
        pool.submit(done.client, op(issued)).map_err(|e| e.to_string())?;
        issued += 1;
    }
    if errors > 0 {
        return Err(format!("{errors} replies were not what the workload expects"));
    }
    Ok(Measurement::from_histogram(&latency, measured, retransmissions))
}
