//! What the outside world shares with a running TARA dataflow: the stop signal and the counters
//! that every replica publishes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use super::placement::{Placement, Stage};

/// Counters one replica publishes after every activation. Which fields a stage fills is listed
/// on each field; the others stay zero.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// Executors: the next sequence number to execute. Proposers: the next to assign.
    pub next: AtomicU64,
    /// Executors: commands executed (duplicates excluded). Proposers: proposals made.
    /// Committers: proposals accepted.
    pub count: AtomicU64,
    /// Executors: the hash chain over everything executed, in order.
    pub history: AtomicU64,
    /// Executors: the digest of the application state and duplicate table, published when the
    /// dataflow stops.
    pub state_digest: AtomicU64,
    /// Entries held in memory (window slots, records, cached results, waiting requests).
    pub held: AtomicU64,
    /// Proposers: the most instances ever in flight at once (above 1 shows pipelining).
    pub in_flight_max: AtomicU64,
    /// The stability threshold the replica adopted.
    pub stable: AtomicU64,
    /// Executors: checkpoints restored from peers (state transfers).
    pub transfers: AtomicU64,
    /// Executors: nacks sent. Proposers: proposals repeated on a nack.
    pub repairs: AtomicU64,
}

impl ReplicaStats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Sets a counter.
    pub fn set(counter: &AtomicU64, value: u64) {
        counter.store(value, Ordering::Relaxed);
    }
}

/// Shared between a TARA dataflow and the code that runs it.
#[derive(Debug)]
pub struct Control {
    stop: AtomicBool,
    origin: Instant,
    stats: BTreeMap<(Stage, u32), ReplicaStats>,
}

impl Control {
    /// Control for a dataflow with this placement; times are measured from now.
    pub fn new(placement: &Placement) -> Arc<Control> {
        let mut stats = BTreeMap::new();
        for stage in Stage::ALL {
            for replica in 0..placement.stage(stage).len() as u32 {
                stats.insert((stage, replica), ReplicaStats::default());
            }
        }
        Arc::new(Control { stop: AtomicBool::new(false), origin: Instant::now(), stats })
    }

    /// Asks every operator to stop: they publish final counters and release their capabilities,
    /// so the dataflow completes and the workers can return.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// True once [`Control::stop`] was called.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Microseconds since the dataflow was set up.
    pub fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// The counters of one replica.
    pub fn stats(&self, stage: Stage, replica: u32) -> Option<&ReplicaStats> {
        self.stats.get(&(stage, replica))
    }

    /// The counters of every replica of a stage.
    pub fn stage_stats(&self, stage: Stage) -> impl Iterator<Item = (u32, &ReplicaStats)> {
        self.stats.range((stage, 0)..=(stage, u32::MAX)).map(|((_, r), s)| (*r, s))
    }
}
