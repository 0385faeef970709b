//! What every stage has in common: the [`Replica`] trait that a host drives, the [`Outbox`] a
//! stage fills, the [`Counters`] it publishes, and the durable state it resumes from.
//!
//! A host (the timely stage host, or the deterministic simulator) owns the IO. Its loop, for
//! every replica it hosts:
//!
//! 1. hand each tuple addressed to the replica to [`Replica::on_tuple`], then call
//!    [`Replica::on_tick`];
//! 2. make the outbox's durable writes ([`Outbox::log`], [`Outbox::compact`], [`Outbox::stores`],
//!    [`Outbox::value`]) durable;
//! 3. send every tuple of the outbox to the receivers the topology names, except that a tuple
//!    whose route says `after_persist` waits until every write issued before it is durable
//!    ([`crate::protocol::topology::Route::after_persist`]);
//! 4. on a crash drop the replica; on a restart build a new one and hand it what storage read
//!    back ([`Replica::resume`]).
//!
//! ```
//! use tara::protocol::{GcSource, Outbox, Params, Replica, Tuple};
//! use tara::protocol::{Checkpoint, Stable};
//!
//! let params = Params::default();
//! let mut gc = GcSource::new(0, &params);
//! let mut out = Outbox::default();
//! for executor in [0, 1] {
//!     gc.on_tuple(Tuple::Checkpoint(Checkpoint { executor, sequence: 128 }), 0, &mut out);
//! }
//! gc.on_tick(0, &mut out);
//! let mut sent = Vec::new();
//! out.drain(|tuple| sent.push(tuple));
//! assert_eq!(sent, vec![Tuple::Stable(Stable { source: 0, sequence: 128 })]);
//! assert_eq!(gc.counters().stable, 128);
//! ```

use std::sync::Arc;

use super::committer::LogEntry;
use super::executor::Store;
use super::topology::{Stage, Tuple};
use super::tuple::{
    Actual, Checkpoint, Commit, Executed, Fetch, Nack, Propose, Record, Reply, Request, Stable, Target, Transfer, View,
};

/// What a call on a stage emits: durable writes (host duty) and tuples, by kind.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Committers: entries to append to the record log.
    pub log: Vec<LogEntry>,
    /// Committers: replace the record log with these entries (its current state), after
    /// appending [`Outbox::log`]; keeps the log bounded.
    pub compact: Option<Vec<LogEntry>>,
    /// Executors: checkpoints to store.
    pub stores: Vec<Store>,
    /// The replica's one durable number: a proposer's highest led view, a controller's view.
    pub value: Option<u64>,
    /// Sources: requests, each with the view whose proposer it is for.
    pub requests: Vec<(u64, Request)>,
    /// Proposers: proposals, to every committer.
    pub proposals: Vec<Propose>,
    /// Committers: commits, to every executor.
    pub commits: Vec<Commit>,
    /// Executors: results, to the source each command came through.
    pub replies: Vec<Reply>,
    /// Executors: results of forwarded commands, to the source each came through and to the
    /// worker of the front end that took it (the first of the pair).
    pub forwarded: Vec<(u32, Reply)>,
    /// Executors: executed commands, for a consuming dataflow.
    pub executed: Vec<Executed>,
    /// Executors: checkpoint announcements, to every garbage-collection source.
    pub checkpoints: Vec<Checkpoint>,
    /// Garbage-collection sources: thresholds, to every proposer, committer and executor.
    pub stable: Vec<Stable>,
    /// Executors: state-transfer requests.
    pub fetches: Vec<Fetch>,
    /// Executors: checkpoints for lagging peers.
    pub transfers: Vec<Transfer>,
    /// Executors: requests to repeat a proposal.
    pub nacks: Vec<Nack>,
    /// Sources: progress reports, to every controller.
    pub targets: Vec<Target>,
    /// Executors: progress reports, to every controller.
    pub actuals: Vec<Actual>,
    /// Controllers: view announcements.
    pub views: Vec<View>,
    /// Committers: records, for the proposer of the view each is for.
    pub records: Vec<Record>,
}

/// The durable writes of an outbox, taken out for the storage layer.
#[derive(Debug, Default)]
pub struct Writes {
    /// See [`Outbox::log`].
    pub log: Vec<LogEntry>,
    /// See [`Outbox::compact`].
    pub compact: Option<Vec<LogEntry>>,
    /// See [`Outbox::stores`].
    pub stores: Vec<Store>,
    /// See [`Outbox::value`].
    pub value: Option<u64>,
}

impl Writes {
    /// True if there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty() && self.compact.is_none() && self.stores.is_empty() && self.value.is_none()
    }
}

impl Outbox {
    /// Takes the durable writes out, leaving the tuples.
    pub fn take_writes(&mut self) -> Writes {
        Writes {
            log: std::mem::take(&mut self.log),
            compact: self.compact.take(),
            stores: std::mem::take(&mut self.stores),
            value: self.value.take(),
        }
    }

    /// Hands every tuple to `f`, emptying the outbox's tuple lists (the writes stay).
    pub fn drain(&mut self, mut f: impl FnMut(Tuple)) {
        self.requests.drain(..).for_each(|(view, request)| f(Tuple::Request { view, request }));
        self.proposals.drain(..).for_each(|x| f(Tuple::Propose(x)));
        self.commits.drain(..).for_each(|x| f(Tuple::Commit(x)));
        self.replies.drain(..).for_each(|x| f(Tuple::Reply(x)));
        self.forwarded.drain(..).for_each(|(origin, reply)| f(Tuple::Forwarded { origin, reply }));
        self.executed.drain(..).for_each(|x| f(Tuple::Executed(Box::new(x))));
        self.checkpoints.drain(..).for_each(|x| f(Tuple::Checkpoint(x)));
        self.stable.drain(..).for_each(|x| f(Tuple::Stable(x)));
        self.fetches.drain(..).for_each(|x| f(Tuple::Fetch(x)));
        self.transfers.drain(..).for_each(|x| f(Tuple::Transfer(x)));
        self.nacks.drain(..).for_each(|x| f(Tuple::Nack(x)));
        self.targets.drain(..).for_each(|x| f(Tuple::Target(x)));
        self.actuals.drain(..).for_each(|x| f(Tuple::Actual(x)));
        self.views.drain(..).for_each(|x| f(Tuple::View(x)));
        self.records.drain(..).for_each(|x| f(Tuple::Record(x)));
    }
}

/// Counters one replica publishes after every activation. Which fields a stage fills is listed
/// on each field; the others stay zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Executors: the next sequence number to execute. Proposers: proposals made. Committers:
    /// their view. Sources: the next request number.
    pub next: u64,
    /// The view the replica is in (proposers, executors, controllers).
    pub view: u64,
    /// Executors: commands executed (duplicates excluded). Proposers: proposals made.
    /// Committers: proposals accepted. Controllers: view changes started.
    pub count: u64,
    /// Executors: the hash chain over everything executed, in order.
    pub history: u64,
    /// Entries held in memory (window slots, records, cached results, waiting requests).
    pub held: u64,
    /// Proposers: the most instances ever in flight at once (above 1 shows pipelining).
    pub in_flight_max: u64,
    /// The stability threshold the replica adopted.
    pub stable: u64,
    /// Executors: checkpoints restored from peers (state transfers).
    pub transfers: u64,
    /// Executors: nacks sent. Proposers: proposals repeated. Sources: requests resent.
    pub repairs: u64,
    /// Proposers: requests that found the window full and waited.
    pub stalls: u64,
    /// Proposers: requests dropped because `window` requests were already waiting.
    pub dropped: u64,
    /// Executors: the newest checkpoint announced (its sequence number).
    pub stored: u64,
    /// Proposers: no-ops proposed because the merge waited on their partition (Section IV).
    /// Executors: fill requests sent to idle partitions.
    pub filled: u64,
    /// Executors: the most execution slots committed beyond the next one while the next one
    /// waited (how far the slowest partition held the others back in the merge).
    pub lag_max: u64,
    /// Executors: live client sessions in the duplicate-detection table.
    pub sessions: u64,
}

/// What storage read back for a replica at its (re)start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// Nothing: the replica starts for the first time (or keeps no durable state).
    Fresh,
    /// A committer's record log, every whole entry in order.
    Log(Vec<LogEntry>),
    /// An executor's newest intact checkpoint, framed; `None` if it has none.
    Checkpoint(Option<(u64, Arc<Vec<u8>>)>),
    /// A proposer's highest led view, a controller's view, or a source's incarnation (already
    /// counted up for this start); `None` if it never wrote one.
    Value(Option<u64>),
}

/// One replica of a stage, as a host drives it (see the module docs).
pub trait Replica {
    /// The stage this replica belongs to.
    fn stage(&self) -> Stage;

    /// This replica's index within its stage.
    fn id(&self) -> u32;

    /// A tuple addressed to this replica. Returns false for a kind the stage does not receive
    /// (a misrouted tuple, which is ignored).
    fn on_tuple(&mut self, tuple: Tuple, now_us: u64, out: &mut Outbox) -> bool;

    /// Time passed.
    fn on_tick(&mut self, now_us: u64, out: &mut Outbox);

    /// A freshly built replica takes over its durable state (after a crash or a process
    /// restart). An error means the state could not be used; the replica then starts as new.
    fn resume(&mut self, recovered: Recovered) -> Result<(), String>;

    /// When the host must call [`Replica::on_tick`] next, at the latest: a time already past
    /// asks for the next epoch; `None` means not until a tuple arrives. Hosts tick a replica on
    /// every delivery anyway, and let an idle one sleep until its deadline, so every timer of
    /// the replica must show up here.
    fn deadline_us(&self) -> Option<u64> {
        None
    }

    /// The replica's counters.
    fn counters(&self) -> Counters;

    /// Executors: a digest of the application state and duplicate-detection table (computed on
    /// demand: it hashes the whole state).
    fn state_digest(&self) -> u64 {
        0
    }
}

/// How far a steady announcement backs off: at most this many times its base interval.
pub const REPEAT_BACKOFF_MAX: u64 = 8;

/// A periodic announcement (a progress report, a threshold) that repeats at its base interval
/// while what it says changes, and ever more slowly (doubling, up to [`REPEAT_BACKOFF_MAX`]
/// times the base) while it says the same. Repeats make up for lost messages; an idle cluster
/// then sends a few of them per second instead of one per interval per replica.
///
/// ```
/// use tara::protocol::replica::Repeat;
///
/// let mut r = Repeat::new(100);
/// assert!(r.due(100, Some(7)));
/// assert!(!r.due(150, Some(7)));
/// assert!(r.due(200, Some(7)), "the first repeat comes after the base interval");
/// assert_eq!(r.next_us(), 400, "then the interval doubles");
/// assert!(!r.due(250, Some(8)) && r.due(300, Some(8)), "a change goes out at the base interval");
/// assert_eq!(r.next_us(), 400);
/// assert!(r.due(400, None) && r.next_us() == 500, "None: always at the base interval");
/// ```
#[derive(Clone, Debug)]
pub struct Repeat {
    base_us: u64,
    interval_us: u64,
    sent_us: Option<u64>,
    said: Option<u64>,
}

impl Repeat {
    /// An announcement repeated every `base_us` at the fastest.
    pub fn new(base_us: u64) -> Repeat {
        Repeat { base_us, interval_us: base_us, sent_us: None, said: None }
    }

    /// True if the announcement is due at `now_us`, and if so records it as sent. `key` sums up
    /// what it says (`None`: something that must repeat at the base rate, such as outstanding
    /// work).
    pub fn due(&mut self, now_us: u64, key: Option<u64>) -> bool {
        let steady = key.is_some() && key == self.said;
        if !steady {
            self.interval_us = self.base_us;
        }
        if self.sent_us.is_some_and(|sent| now_us.saturating_sub(sent) < self.interval_us) {
            return false;
        }
        if steady && self.sent_us.is_some() {
            self.interval_us = (self.interval_us * 2).min(self.base_us * REPEAT_BACKOFF_MAX);
        }
        (self.sent_us, self.said) = (Some(now_us), key);
        true
    }

    /// Records an announcement sent out of turn (on a change) at `now_us`.
    pub fn sent(&mut self, now_us: u64, key: Option<u64>) {
        if key.is_none() || key != self.said {
            self.interval_us = self.base_us;
        }
        (self.sent_us, self.said) = (Some(now_us), key);
    }

    /// When the announcement is due next if nothing changes.
    pub fn next_us(&self) -> u64 {
        self.sent_us.map_or(0, |sent| sent + self.interval_us)
    }
}
