//! Closed-loop key-value clients that record every invocation and response with real times,
//! for the linearizability checker.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tara::app::kv::{KvOp, KvResult};
use tara::cluster::{ClientPool, Cluster};

use super::linearizability::Operation;

/// Clients on few keys (many conflicts), each with one command outstanding.
pub struct Recorder {
    pool: ClientPool,
    ids: Vec<u64>,
    keys: usize,
    rng: SmallRng,
    start: Instant,
    history: Vec<Operation>,
    pending: HashMap<(u64, u64), usize>,
    writes: u64,
}

impl Recorder {
    /// `clients` clients of `cluster` on `keys` keys; times are measured from `start`.
    pub fn new(cluster: &Cluster, clients: usize, keys: usize, seed: u64, start: Instant) -> Recorder {
        let mut pool = cluster.pool();
        let ids = (0..clients).map(|_| pool.add_client()).collect();
        let rng = SmallRng::seed_from_u64(seed);
        Recorder { pool, ids, keys, rng, start, history: Vec::new(), pending: HashMap::new(), writes: 0 }
    }

    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn submit(&mut self, client: u64, op: KvOp) -> bool {
        let invoke = self.now_us();
        let Ok(timestamp) = self.pool.submit(client, op.encode()) else { return false };
        self.history.push(Operation { client, invoke, response: None, op, result: None });
        self.pending.insert((client, timestamp), self.history.len() - 1);
        true
    }

    fn random_op(&mut self, client: u64) -> KvOp {
        let key = format!("k{}", self.rng.random_range(0..self.keys));
        match self.rng.random_range(0..10) {
            0..=4 => {
                self.writes += 1;
                KvOp::Put { key, value: format!("c{client}-{}", self.writes).into_bytes() }
            }
            5..=8 => KvOp::Get { key },
            _ => KvOp::Delete { key },
        }
    }

    /// Waits up to `timeout` for one answer and records it; returns its client.
    fn complete_one(&mut self, timeout: Duration) -> Option<u64> {
        let done = self.pool.poll(timeout).ok()??;
        let index = self.pending.remove(&(done.client, done.timestamp))?;
        let response = self.now_us();
        let operation = &mut self.history[index];
        operation.response = Some(response);
        operation.result = KvResult::decode(&done.result).ok();
        Some(done.client)
    }

    /// Runs every client in a closed loop for `duration`.
    pub fn run_for(&mut self, duration: Duration) {
        let until = Instant::now() + duration;
        for client in self.ids.clone() {
            if !self.pending.keys().any(|(c, _)| *c == client) {
                let op = self.random_op(client);
                self.submit(client, op);
            }
        }
        while Instant::now() < until {
            if let Some(client) = self.complete_one(until.saturating_duration_since(Instant::now())) {
                let op = self.random_op(client);
                self.submit(client, op);
            }
        }
    }

    /// Runs every client in a closed loop until `done` holds (checked between answers and at
    /// least every 50 ms) or `timeout` passes; returns whether `done` held. Tests wait for an
    /// observed event this way instead of asserting what a fixed phase achieved.
    pub fn run_until(&mut self, timeout: Duration, mut done: impl FnMut(&Recorder) -> bool) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if done(self) {
                return true;
            }
            self.run_for(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
        }
        done(self)
    }

    /// Waits until every outstanding command is answered; false if some are not within `timeout`.
    pub fn drain(&mut self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while !self.pending.is_empty() && Instant::now() < until {
            self.complete_one(until.saturating_duration_since(Instant::now()));
        }
        self.pending.is_empty()
    }

    /// Reads every key once more (so that a lost acknowledged write shows in the history).
    pub fn read_all(&mut self, timeout: Duration) -> bool {
        let client = self.ids[0];
        for key in 0..self.keys {
            self.submit(client, KvOp::Get { key: format!("k{key}") });
            if !self.drain(timeout) {
                return false;
            }
        }
        true
    }

    /// Every operation so far.
    pub fn history(&self) -> &[Operation] {
        &self.history
    }

    /// Operations that got an answer.
    pub fn completed(&self) -> usize {
        self.history.iter().filter(|o| o.response.is_some()).count()
    }
}
