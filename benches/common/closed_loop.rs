//! Closed-loop clients inside the dataflow, shared by the benches: each client has one command
//! outstanding and issues the next when the first reply to the previous one arrives. Replies come
//! back through a feedback loop, so no thread outside timely is involved.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

#[path = "profile.rs"]
pub mod profile;

/// Completions and latencies, shared by the client operators of all workers.
pub struct Stats {
    pub completed: AtomicU64,
    pub latency: Mutex<Histogram<u64>>,
    pub recording: AtomicBool,
}

impl Stats {
    pub fn new() -> Arc<Stats> {
        Arc::new(Stats {
            completed: AtomicU64::new(0),
            latency: Mutex::new(Histogram::new(3).expect("histogram")),
            recording: AtomicBool::new(false),
        })
    }
}

/// One client's state at the operator that drives it.
pub struct ClientState {
    pub id: u64,
    pub timestamp: u64,
    pub sent: Instant,
    /// The outstanding command has had its first reply (the others are ignored).
    pub answered: bool,
}

/// Per-worker bookkeeping of the clients it drives; flushes latencies into `Stats` in batches.
pub struct Driver {
    pub clients: Vec<ClientState>,
    stats: Arc<Stats>,
    local: Histogram<u64>,
    completed: u64,
}

impl Driver {
    pub fn new(ids: impl Iterator<Item = u64>, stats: Arc<Stats>) -> Driver {
        let now = Instant::now();
        let clients = ids.map(|id| ClientState { id, timestamp: 0, sent: now, answered: false }).collect();
        Driver { clients, stats, local: Histogram::new(3).expect("histogram"), completed: 0 }
    }

    /// Records the reply `(index, timestamp)` if it is the first for the outstanding command;
    /// returns true if the client should send its next command.
    pub fn complete(&mut self, index: usize, timestamp: u64) -> bool {
        let Some(client) = self.clients.get_mut(index) else { return false };
        // Every executor replies: only the first reply completes the command, even when the
        // others arrive in the same activation, before the client's next command is issued.
        if client.timestamp != timestamp || client.answered {
            return false;
        }
        client.answered = true;
        if self.stats.recording.load(Ordering::Relaxed) {
            let _ = self.local.record(client.sent.elapsed().as_micros() as u64);
            self.completed += 1;
        }
        true
    }

    /// Starts the next command of client `index`; returns its timestamp.
    pub fn next(&mut self, index: usize) -> u64 {
        let client = &mut self.clients[index];
        client.timestamp += 1;
        client.answered = false;
        client.sent = Instant::now();
        client.timestamp
    }

    /// Publishes what this worker measured so far.
    pub fn flush(&mut self) {
        if self.completed > 0 {
            self.stats.completed.fetch_add(self.completed, Ordering::Relaxed);
            if let Ok(mut h) = self.stats.latency.lock() {
                let _ = h.add(&self.local);
            }
            self.local.reset();
            self.completed = 0;
        }
    }
}

/// A measurement of one configuration.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub ops_per_second: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub mean_us: f64,
}

/// Runs `start` (which builds and runs the dataflow on worker threads and returns a stop
/// function), warms up, measures for `seconds`, then stops.
pub fn measure(stats: &Arc<Stats>, warmup: Duration, seconds: Duration, stop: impl FnOnce()) -> Measurement {
    std::thread::sleep(warmup);
    stats.recording.store(true, Ordering::Release);
    let start = Instant::now();
    std::thread::sleep(seconds);
    stats.recording.store(false, Ordering::Release);
    let elapsed = start.elapsed().as_secs_f64();
    // Let the workers flush what they recorded before the flag went down.
    std::thread::sleep(Duration::from_millis(50));
    stop();
    let completed = stats.completed.load(Ordering::Acquire);
    let h = stats.latency.lock().expect("histogram").clone();
    Measurement {
        ops_per_second: completed as f64 / elapsed,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        mean_us: h.mean(),
    }
}
