//! What the outside world shares with a running TARA dataflow: the stop signal and the counters
//! that every replica publishes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::placement::{Placement, Stage};
use crate::protocol::Counters;
use crate::storage::StorageError;

/// Counters one replica publishes after every activation. Which fields a stage fills is listed
/// on each field; the others stay zero.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// Executors: the next sequence number to execute. Proposers: the next to assign.
    /// Committers: their view.
    pub next: AtomicU64,
    /// The view the replica is in (proposers, executors, controllers).
    pub view: AtomicU64,
    /// Executors: commands executed (duplicates excluded). Proposers: proposals made.
    /// Committers: proposals accepted. Controllers: view changes started.
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
    /// The most entries `held` ever reached.
    pub held_max: AtomicU64,
    /// Proposers: requests that found the window full and waited.
    pub stalls: AtomicU64,
    /// Proposers: requests dropped because `window` requests were already waiting.
    pub dropped: AtomicU64,
    /// Executors: the newest checkpoint made durable (its sequence number).
    pub stored: AtomicU64,
    /// Proposers: no-ops that filled slots the merge waited for. Executors: fill requests sent.
    pub filled: AtomicU64,
    /// Executors: the most execution slots committed beyond the next one while it waited.
    pub lag_max: AtomicU64,
    /// Fault injection: the replica is crashed (drops every input, emits nothing).
    down: AtomicBool,
    /// Fault injection: bumped by every restart; a replica rebuilds from durable state when it
    /// sees a new generation.
    generation: AtomicU64,
    /// Fault injection: the replica's consensus input (requests, proposals, commits) is lost.
    deaf: AtomicBool,
    /// Set by the host once it has stopped a crashed replica and its queued writes are
    /// finished: from then on nothing writes the replica's files until it restarts.
    halted: AtomicBool,
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

    /// Publishes the entries held now and keeps the high-water mark.
    pub fn set_held(&self, held: u64) {
        self.held.store(held, Ordering::Relaxed);
        self.held_max.fetch_max(held, Ordering::Relaxed);
    }

    /// Publishes a replica's counters.
    pub fn publish(&self, c: &Counters) {
        // Each counter has the name of the field it publishes.
        macro_rules! publish { ($($field:ident),*) => { $(self.$field.store(c.$field, Ordering::Relaxed);)* } }
        publish!(
            next,
            view,
            count,
            history,
            in_flight_max,
            stable,
            transfers,
            repairs,
            stalls,
            dropped,
            stored,
            filled,
            lag_max
        );
        self.set_held(c.held);
    }

    /// True while the replica is crashed.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// True once a crash took effect: the host stopped the replica and finished its queued
    /// writes, so its files stay as they are until a restart ([`Control::crash`] only asks for
    /// the crash, which the host applies at its next activation).
    pub fn is_halted(&self) -> bool {
        self.halted.load(Ordering::Acquire)
    }

    /// Records whether the host holds the replica stopped (see [`ReplicaStats::is_halted`]).
    pub(crate) fn set_halted(&self, halted: bool) {
        self.halted.store(halted, Ordering::Release);
    }

    /// The restart generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// True while the replica's consensus input is lost.
    pub fn is_deaf(&self) -> bool {
        self.deaf.load(Ordering::Acquire)
    }
}

/// A replica that stopped because of its durable state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaFailure {
    /// The replica's stage.
    pub stage: Stage,
    /// The replica's index.
    pub replica: u32,
    /// True if it refused to start (damaged, missing or unreadable state); false if a write
    /// failed while it ran.
    pub at_start: bool,
    /// What went wrong, naming the file.
    pub error: StorageError,
}

impl std::fmt::Display for ReplicaFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.at_start { "refused to start" } else { "stopped participating" };
        write!(f, "{} {} {what}: {}", self.stage.replica_name(), self.replica, self.error)
    }
}

/// Shared between a TARA dataflow and the code that runs it.
#[derive(Debug)]
pub struct Control {
    stop: AtomicBool,
    origin: Instant,
    stats: BTreeMap<(Stage, u32), Arc<ReplicaStats>>,
    failures: Mutex<Vec<ReplicaFailure>>,
    /// Every failure is also sent here, for whoever waits for them ([`Control::failure_events`]).
    events: (crossbeam_channel::Sender<ReplicaFailure>, crossbeam_channel::Receiver<ReplicaFailure>),
    /// When a request-path tuple last reached a stage of this process ([`Control::now_us`]).
    active_us: AtomicU64,
}

impl Control {
    /// Control for a dataflow with this placement; times are measured from now.
    pub fn new(placement: &Placement) -> Arc<Control> {
        let mut stats = BTreeMap::new();
        for stage in Stage::ALL {
            for replica in 0..placement.stage(stage).len() as u32 {
                stats.insert((stage, replica), Arc::default());
            }
        }
        let (stop, origin, failures, events) =
            (AtomicBool::new(false), Instant::now(), Mutex::default(), crossbeam_channel::unbounded());
        Arc::new(Control { stop, origin, stats, failures, events, active_us: AtomicU64::new(0) })
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

    /// Notes that the request path is busy at `now_us` (commands, requests, commits, replies).
    pub fn note_activity(&self, now_us: u64) {
        self.active_us.fetch_max(now_us, Ordering::Relaxed);
    }

    /// True if the request path was busy within `window_us` before `now_us`.
    pub fn active_within(&self, now_us: u64, window_us: u64) -> bool {
        now_us.saturating_sub(self.active_us.load(Ordering::Relaxed)) < window_us
    }

    /// Microseconds since the dataflow was set up.
    pub fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// Crashes a replica: from its next activation it drops every input and emits nothing, and
    /// it forgets everything that is not durable. The crash takes effect asynchronously:
    /// [`ReplicaStats::is_halted`] tells when it has (its writer finished, its files at rest).
    pub fn crash(&self, stage: Stage, replica: u32) -> Result<(), String> {
        let stats = self.stats(stage, replica).ok_or_else(|| no_such(stage, replica))?;
        stats.down.store(true, Ordering::Release);
        Ok(())
    }

    /// Restarts a crashed replica from its durable state only (an executor from its newest
    /// valid checkpoint); restarting a running replica crashes and restarts it at once.
    pub fn restart(&self, stage: Stage, replica: u32) -> Result<(), String> {
        let stats = self.stats(stage, replica).ok_or_else(|| no_such(stage, replica))?;
        stats.generation.fetch_add(1, Ordering::AcqRel);
        stats.halted.store(false, Ordering::Release);
        stats.down.store(false, Ordering::Release);
        Ok(())
    }

    /// Loses (or stops losing) a replica's consensus input, as a network that drops tuples would.
    pub fn set_deaf(&self, stage: Stage, replica: u32, deaf: bool) -> Result<(), String> {
        let stats = self.stats(stage, replica).ok_or_else(|| no_such(stage, replica))?;
        stats.deaf.store(deaf, Ordering::Release);
        Ok(())
    }

    /// A replica stopped because of its durable state: it stays down (as a crashed replica)
    /// until [`Control::restart`] brings it back, which opens its state again.
    pub fn fail(&self, failure: ReplicaFailure) {
        tracing::error!("{failure}");
        if let Some(stats) = self.stats(failure.stage, failure.replica) {
            stats.down.store(true, Ordering::Release);
        }
        let _ = self.events.0.send(failure.clone());
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).push(failure);
    }

    /// Receives every durable-state failure as it happens (failures are rare: a process waits
    /// here to exit when a replica refuses to start).
    pub fn failure_events(&self) -> crossbeam_channel::Receiver<ReplicaFailure> {
        self.events.1.clone()
    }

    /// Every durable-state failure so far, oldest first.
    pub fn failures(&self) -> Vec<ReplicaFailure> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The counters of one replica.
    /// (shared: a host keeps a handle and reads it at every activation).
    pub fn stats(&self, stage: Stage, replica: u32) -> Option<&Arc<ReplicaStats>> {
        self.stats.get(&(stage, replica))
    }

    /// The counters of every replica of a stage.
    pub fn stage_stats(&self, stage: Stage) -> impl Iterator<Item = (u32, &ReplicaStats)> {
        self.stats.range((stage, 0)..=(stage, u32::MAX)).map(|((_, r), s)| (*r, &**s))
    }
}

fn no_such(stage: Stage, replica: u32) -> String {
    format!("there is no replica {replica} of the {}", stage.name())
}
