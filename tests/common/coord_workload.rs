//! Closed-loop coordination-service clients over TCP that record a register history (for the
//! linearizability checker) and sequential creates (for exactly-once), shared by the tests that
//! crash `tara cluster` processes.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tara::app::coordination::{CoordError, CoordOp, CoordResponse, decode_result};
use tara::app::kv::{KvOp, KvResult};
use tara::client::{Client, ClientPool};

use super::linearizability::Operation;

/// One answer of the coordination service, decoded.
pub fn answer(client: &mut Client, op: CoordOp) -> Result<CoordResponse, CoordError> {
    let bytes = client.invoke(op.encode()).expect("the cluster answers");
    decode_result(&bytes).expect("a coordination result")
}

/// Parents of the sequential creates, `/seq/b0`..: one parent would outgrow what a listing may
/// return (`RESULT_BYTES_MAX`) in a long soak.
const BUCKETS: u64 = 64;

/// Registers `/k0`.. on few keys (many conflicts) and sequential creates under `/seq/b*`.
pub struct Workload {
    pool: ClientPool,
    /// The client ids, one per closed-loop client.
    pub ids: Vec<u64>,
    rng: SmallRng,
    start: Instant,
    /// The register history.
    pub history: Vec<Operation>,
    /// (client, timestamp) -> index in `history`, or the prefix of a sequential create.
    pending: HashMap<(u64, u64), Pending>,
    /// Prefix of every sequential create -> whether it was acknowledged.
    pub creates: BTreeMap<String, bool>,
    writes: u64,
    /// Commands answered only after a retransmission.
    pub retried: usize,
    /// Every answer: (client, microseconds since the start, answered after a retransmission).
    pub answered: Vec<(u64, u64, bool)>,
}

enum Pending {
    Register(usize),
    Create(String),
}

/// The number of registers.
pub const KEYS: usize = 6;
impl Workload {
    /// `clients` clients of `pool`; times are measured from now.
    pub fn new(pool: ClientPool, clients: usize) -> Workload {
        let mut pool = pool;
        let ids = (0..clients).map(|_| pool.add_client()).collect();
        let (history, pending, creates) = (Vec::new(), HashMap::new(), BTreeMap::new());
        let (rng, start) = (SmallRng::seed_from_u64(6), Instant::now());
        Workload { pool, ids, rng, start, history, pending, creates, writes: 0, retried: 0, answered: Vec::new() }
    }

    /// Microseconds since the start.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn submit(&mut self, client: u64) {
        let key = self.rng.random_range(0..KEYS);
        let path = format!("/k{key}");
        let roll = self.rng.random_range(0..10);
        self.writes += 1;
        let (op, pending) = match roll {
            0..=1 => {
                let prefix = format!("c{client}-{}-", self.writes);
                self.creates.insert(prefix.clone(), false);
                let path = format!("/seq/b{}/{prefix}", self.writes % BUCKETS);
                let op = CoordOp::Create { path, data: vec![1], sequential: true };
                (op, Pending::Create(prefix))
            }
            2..=5 => {
                let value = format!("c{client}-{}", self.writes).into_bytes();
                let kv = KvOp::Put { key: path.clone(), value: value.clone() };
                self.history.push(Operation { client, invoke: self.now_us(), response: None, op: kv, result: None });
                (CoordOp::SetData { path, data: value, version: None }, Pending::Register(self.history.len() - 1))
            }
            _ => {
                let kv = KvOp::Get { key: path.clone() };
                self.history.push(Operation { client, invoke: self.now_us(), response: None, op: kv, result: None });
                (CoordOp::GetData { path }, Pending::Register(self.history.len() - 1))
            }
        };
        let timestamp = self.pool.submit(client, op.encode()).expect("the client window has room");
        self.pending.insert((client, timestamp), pending);
    }

    /// Records one answer; returns its client.
    fn complete_one(&mut self, timeout: Duration) -> Option<u64> {
        let done = self.pool.poll(timeout).ok()??;
        let pending = self.pending.remove(&(done.client, done.timestamp))?;
        self.retried += usize::from(done.retransmissions > 0);
        self.answered.push((done.client, self.now_us(), done.retransmissions > 0));
        let result = decode_result(&done.result).expect("a coordination result");
        match pending {
            Pending::Create(prefix) => {
                assert!(matches!(result, Ok(CoordResponse::Created { .. })), "{result:?}");
                self.creates.insert(prefix, true);
            }
            Pending::Register(index) => {
                let response = self.now_us();
                let operation = &mut self.history[index];
                operation.response = Some(response);
                // A write answers its new version only: any linearization point in its interval.
                operation.result = match result {
                    Ok(CoordResponse::Data { data, .. }) => Some(KvResult::Value((!data.is_empty()).then_some(data))),
                    Ok(CoordResponse::Set(_)) => None,
                    other => panic!("unexpected answer {other:?}"),
                };
            }
        }
        Some(done.client)
    }

    /// Runs every client in a closed loop for `duration`.
    pub fn run_for(&mut self, duration: Duration) {
        let until = Instant::now() + duration;
        for client in self.ids.clone() {
            if !self.pending.keys().any(|(c, _)| *c == client) {
                self.submit(client);
            }
        }
        while Instant::now() < until {
            if let Some(client) = self.complete_one(until.saturating_duration_since(Instant::now())) {
                self.submit(client);
            }
        }
    }

    /// Waits until every outstanding command is answered; false if some are not within `timeout`.
    pub fn drain(&mut self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while !self.pending.is_empty() && Instant::now() < until {
            self.complete_one(until.saturating_duration_since(Instant::now()));
        }
        self.pending.is_empty()
    }
}

/// Creates the workload's znodes with empty data (the register's initial "no value").
pub fn create_znodes(client: &mut Client) {
    let buckets = (0..BUCKETS).map(|b| format!("/seq/b{b}"));
    for path in std::iter::once("/seq".to_string()).chain(buckets).chain((0..KEYS).map(|k| format!("/k{k}"))) {
        let created = answer(client, CoordOp::Create { path, data: vec![], sequential: false });
        assert!(matches!(created, Ok(_) | Err(CoordError::NodeExists(_))), "{created:?}");
    }
}

/// Reads every register once more, so that a lost acknowledged write shows in the history.
pub fn read_every_register(admin: &mut Client, workload: &mut Workload) {
    for key in 0..KEYS {
        let invoke = workload.now_us();
        let got = answer(admin, CoordOp::GetData { path: format!("/k{key}") });
        let Ok(CoordResponse::Data { data, .. }) = got else { panic!("{got:?}") };
        let result = Some(KvResult::Value((!data.is_empty()).then_some(data)));
        let op = KvOp::Get { key: format!("/k{key}") };
        workload.history.push(Operation { client: 0, invoke, response: Some(workload.now_us()), op, result });
    }
}

/// Every acknowledged sequential create exists exactly once; an unacknowledged one at most once.
pub fn check_creates(client: &mut Client, creates: &BTreeMap<String, bool>) {
    let mut children = Vec::new();
    for bucket in 0..BUCKETS {
        let path = format!("/seq/b{bucket}");
        let listed = answer(client, CoordOp::GetChildren { path: path.clone() });
        let Ok(CoordResponse::Children(listed)) = listed else { panic!("{path} lists: {listed:?}") };
        children.extend(listed);
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for child in &children {
        let prefix = &child[..child.len() - 10];
        *seen.entry(prefix).or_default() += 1;
    }
    for (prefix, acknowledged) in creates {
        let count = seen.get(prefix.as_str()).copied().unwrap_or(0);
        assert!(count <= 1, "{prefix}: took effect {count} times");
        assert!(!acknowledged || count == 1, "{prefix}: acknowledged but lost");
    }
}
