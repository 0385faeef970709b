//! Persist, then release: the one gate between a replica's outbox and the network.
//!
//! A host hands every outbox to [`Persist::send`]. The outbox's durable writes go to the
//! replica's [`ReplicaStore`]; a tuple whose route says `after_persist` waits until every write
//! the replica issued before it is durable; other tuples pass at once. A write that fails is
//! never acknowledged: nothing that waited for it (or for any later write) is ever released,
//! and from then on the gate reports the failure, so that the host stops the replica.
//!
//! Writes are applied in one of three ways: on the caller's thread ([`Persist::inline`], for
//! rare small writes), by a writer thread that syncs everything queued at once
//! ([`Persist::threaded`], group commit), or when the caller says so ([`Persist::manual`], for
//! the deterministic simulator).
//!
//! ```
//! use std::path::Path;
//! use std::sync::Arc;
//! use tara::protocol::{Commit, LogEntry, Outbox, Request, Stage, Tuple};
//! use tara::storage::{Disk, MemDisk, Persist, ReplicaStore};
//!
//! let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
//! let opened = ReplicaStore::open(&disk, Path::new("/state"), Stage::Committer, 0, true).unwrap();
//! let mut persist = Persist::manual(opened.store);
//! let mut out = Outbox::default();
//! out.log.push(LogEntry::View(1));
//! out.commits.push(Commit { committer: 0, sequence: 0, view: 1, request: Request::noop() });
//! let mut sent = Vec::new();
//! persist.send(&mut out, &mut |t| sent.push(t)).unwrap();
//! assert!(sent.is_empty(), "the commit waits for its log entry");
//! persist.flush();
//! persist.release(&mut |t| sent.push(t)).unwrap();
//! assert!(matches!(sent[..], [Tuple::Commit(_)]));
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::disk::Syncer;
use super::error::{Problem, StorageError};
use super::replica::ReplicaStore;
use crate::protocol::topology::route;
use crate::protocol::{Outbox, Stage, Tuple, Writes};

/// Batches of writes a replica may have queued for its writer thread before the worker waits.
pub const WRITES_QUEUED_MAX: usize = 4096;

/// Syncs a writer may have in flight at once. With one, a commit whose write arrives while a
/// sync runs waits for the rest of that sync and then a whole one of its own (one and a half
/// syncs on average); with two, a second lane applies and syncs the writes queued behind a
/// running sync, and the commit waits for about one sync. A sync makes durable everything
/// written to the file before it was called, so the two overlap on the same file.
pub const SYNC_LANES: usize = 2;

/// The lanes of each writer: [`SYNC_LANES`], or `TARA_SYNC_LANES` if set to a positive number
/// (1 gives the serial group commit, to compare).
pub fn sync_lanes() -> usize {
    std::env::var("TARA_SYNC_LANES").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(SYNC_LANES)
}

/// A finished group of writes: the index of its sync (in the order the syncs were started)
/// and the last ticket it covers, or the failure.
type Report = (u64, Result<u64, StorageError>);

/// A writer's lanes and their two channels.
struct Writer {
    jobs: Option<Sender<(u64, Writes)>>,
    done: Receiver<Report>,
    handles: Vec<JoinHandle<()>>,
}

/// What a writer's lanes share: the store (applied under the lock, in ticket order) and the
/// count of syncs started.
struct Lanes {
    store: ReplicaStore,
    started: u64,
}

enum Backend {
    Inline(ReplicaStore),
    Thread(Writer),
    Manual { store: ReplicaStore, queued: Vec<(u64, Writes)> },
}

/// The persist-then-release gate of one replica.
pub struct Persist {
    backend: Backend,
    issued: u64,
    durable: u64,
    /// Syncs reported so far, in the order they were started, and the later ones that finished
    /// early: a ticket counts as durable only once every sync started before its own has
    /// succeeded (a sync that fails may have lost writes that a later one did not cover).
    synced: u64,
    early: BTreeMap<u64, u64>,
    held: VecDeque<(u64, Tuple)>,
    failed: Option<StorageError>,
}

impl std::fmt::Debug for Persist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.held.len();
        f.debug_struct("Persist")
            .field("issued", &self.issued)
            .field("durable", &self.durable)
            .field("held", &held)
            .finish()
    }
}

/// Applies queued batches in order; the ticket of the last one, or the failure.
fn apply_each(store: &mut ReplicaStore, batches: impl Iterator<Item = (u64, Writes)>) -> Result<u64, StorageError> {
    let mut last = 0;
    for (ticket, writes) in batches {
        store.apply(&writes)?;
        last = ticket;
    }
    Ok(last)
}

/// Applies queued batches in order and syncs once; the ticket of the last one, or the failure.
fn apply_all(store: &mut ReplicaStore, batches: impl Iterator<Item = (u64, Writes)>) -> Result<u64, StorageError> {
    let last = apply_each(store, batches)?;
    store.sync()?;
    Ok(last)
}

/// Of the checkpoints queued together, keeps only the newest: it covers everything an older
/// one does, so an executor whose checkpoint writes fall behind writes the newest state once
/// instead of every state it passed, and the announcements of the older ones are released with
/// it (the file an announcement promises is there, or a newer one). Without this, a slow
/// checkpoint disk held stability back by the whole queue of writes, and with it the window
/// and every commit (Section III-D: stability needs f+1 stored checkpoints).
fn newest_checkpoint_only(batches: &mut [(u64, Writes)]) {
    let Some(newest) = batches.iter().flat_map(|(_, w)| &w.stores).map(|s| s.sequence).max() else { return };
    let mut kept = false;
    for (_, writes) in batches.iter_mut().rev() {
        writes.stores.retain(|store| {
            let keep = !kept && store.sequence == newest;
            kept |= keep;
            keep
        });
    }
}

/// What one lane took from the queue: its sync's index, the last ticket applied (or the
/// failure), and what syncs the store.
type Taken = (u64, Result<u64, StorageError>, Option<(PathBuf, Arc<dyn Syncer>)>);

/// Under the lock: waits for a batch, applies it and every batch queued behind it.
fn take(lanes: &Mutex<Lanes>, queue: &Receiver<(u64, Writes)>, stopped: &AtomicBool) -> Option<Taken> {
    // A panic while holding the lock leaves the store as the last write left it: keep using it.
    let mut lanes = lanes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let first = queue.recv().ok()?;
    if stopped.load(Ordering::Acquire) {
        return None;
    }
    let mut batches: Vec<(u64, Writes)> = std::iter::once(first).chain(queue.try_iter()).collect();
    newest_checkpoint_only(&mut batches);
    let applied = apply_each(&mut lanes.store, batches.into_iter());
    lanes.started += 1;
    Some((lanes.started, applied, lanes.store.syncer()))
}

/// One lane of a writer: applies what is queued under the lock, then syncs outside it, so that
/// the other lane can apply and sync the next writes meanwhile. Stops at the first failure:
/// nothing after a failed write is acknowledged.
fn lane(
    lanes: &Mutex<Lanes>,
    queue: &Receiver<(u64, Writes)>,
    report: &Sender<Report>,
    stopped: &AtomicBool,
    wake: &dyn Fn(),
) {
    while let Some((index, applied, syncer)) = take(lanes, queue, stopped) {
        let result = applied.and_then(|last| match &syncer {
            Some((path, syncer)) => {
                syncer.sync().map(|()| last).map_err(|e| StorageError::io(path, Problem::WriteFailed, &e))
            }
            None => Ok(last),
        });
        let failed = result.is_err();
        if failed {
            stopped.store(true, Ordering::Release);
        }
        let _ = report.send((index, result));
        wake();
        if failed {
            return;
        }
    }
}

impl Persist {
    fn with(backend: Backend) -> Persist {
        Persist {
            backend,
            issued: 0,
            durable: 0,
            synced: 0,
            early: BTreeMap::new(),
            held: VecDeque::new(),
            failed: None,
        }
    }

    /// Writes applied and synced on the caller's thread as they are issued.
    pub fn inline(store: ReplicaStore) -> Persist {
        Self::with(Backend::Inline(store))
    }

    /// Writes applied by a writer of [`sync_lanes`] threads (named after replica `id` of
    /// `stage`), which calls `wake` after each group of writes is durable (or failed), so that
    /// the host releases what waited for them.
    pub fn threaded(
        stage: Stage,
        id: u32,
        store: ReplicaStore,
        wake: Box<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Persist> {
        let (jobs, queue) = crossbeam_channel::bounded::<(u64, Writes)>(WRITES_QUEUED_MAX);
        let (report, done) = crossbeam_channel::unbounded();
        let lanes = Arc::new(Mutex::new(Lanes { store, started: 0 }));
        let (stopped, wake) = (Arc::new(AtomicBool::new(false)), Arc::<dyn Fn() + Send + Sync>::from(wake));
        let mut handles = Vec::with_capacity(SYNC_LANES);
        for number in 0..sync_lanes() {
            let (lanes, queue, report, stopped, wake) =
                (lanes.clone(), queue.clone(), report.clone(), stopped.clone(), wake.clone());
            let name = format!("tara-{}-{id}-{number}", stage.replica_name());
            let spawned = std::thread::Builder::new()
                .name(name)
                .spawn(move || lane(&lanes, &queue, &report, &stopped, wake.as_ref()));
            match spawned {
                Ok(handle) => handles.push(handle),
                // The lanes started so far end when `jobs` is dropped.
                Err(e) => return Err(e),
            }
        }
        Ok(Self::with(Backend::Thread(Writer { jobs: Some(jobs), done, handles })))
    }

    /// Writes queued until [`Persist::flush`] (a crash before it loses them, unacknowledged).
    pub fn manual(store: ReplicaStore) -> Persist {
        Self::with(Backend::Manual { store, queued: Vec::new() })
    }

    /// Issues the outbox's writes and hands its tuples to `emit`, holding those that must wait
    /// for the writes; then releases whatever became durable. After a failed write, nothing is
    /// emitted any more and the failure is returned.
    pub fn send(&mut self, out: &mut Outbox, emit: &mut impl FnMut(Tuple)) -> Result<(), StorageError> {
        self.release(emit)?;
        let writes = out.take_writes();
        if !writes.is_empty() {
            self.issue(writes);
        }
        let (issued, durable, held) = (self.issued, self.durable, &mut self.held);
        out.drain(|tuple| {
            if durable < issued && route(tuple.kind()).after_persist {
                held.push_back((issued, tuple));
            } else {
                emit(tuple);
            }
        });
        self.release(emit)
    }

    fn issue(&mut self, writes: Writes) {
        self.issued += 1;
        let ticket = self.issued;
        match &mut self.backend {
            Backend::Inline(store) => match apply_all(store, std::iter::once((ticket, writes))) {
                Ok(ticket) => self.durable = ticket,
                Err(e) => self.fail(e),
            },
            Backend::Thread(writer) => {
                // A writer that stopped after a failure has dropped its queue; its report says why.
                if let Some(jobs) = &writer.jobs {
                    let _ = jobs.send((ticket, writes));
                }
            }
            Backend::Manual { queued, .. } => queued.push((ticket, writes)),
        }
    }

    fn fail(&mut self, error: StorageError) {
        self.held.clear();
        if self.failed.is_none() {
            self.failed = Some(error);
        }
    }

    /// Picks up finished writes and hands every tuple they release to `emit`.
    pub fn release(&mut self, emit: &mut impl FnMut(Tuple)) -> Result<(), StorageError> {
        if let Backend::Thread(writer) = &self.backend {
            let reports: Vec<Report> = writer.done.try_iter().collect();
            for (index, report) in reports {
                match report {
                    Ok(ticket) => drop(self.early.insert(index, ticket)),
                    Err(e) => self.fail(e),
                }
            }
            while let Some(ticket) = self.early.remove(&(self.synced + 1)) {
                self.synced += 1;
                self.durable = self.durable.max(ticket);
            }
        }
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        while self.held.front().is_some_and(|(ticket, _)| *ticket <= self.durable) {
            if let Some((_, tuple)) = self.held.pop_front() {
                emit(tuple);
            }
        }
        Ok(())
    }

    /// Manual gates: applies every queued write now, with one sync.
    pub fn flush(&mut self) {
        let Backend::Manual { store, queued } = &mut self.backend else { return };
        if queued.is_empty() {
            return;
        }
        match apply_all(store, queued.drain(..)) {
            Ok(ticket) => self.durable = ticket,
            Err(e) => self.fail(e),
        }
    }

    /// True while some issued write is not yet durable.
    pub fn pending(&self) -> bool {
        self.durable < self.issued && self.failed.is_none()
    }

    /// Tuples waiting for durable writes.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The failure that stopped this gate, if any.
    pub fn failure(&self) -> Option<&StorageError> {
        self.failed.as_ref()
    }

    /// Ends the gate, as at a crash or a restart: a writer thread finishes the writes it has
    /// queued (so that a restart reads them back) and is joined; held tuples are dropped. Returns
    /// the failure, if a write failed.
    pub fn finish(mut self) -> Result<(), StorageError> {
        if let Backend::Thread(writer) = &mut self.backend {
            writer.jobs.take();
            for handle in writer.handles.drain(..) {
                let _ = handle.join();
            }
        }
        self.release(&mut |_| {})
    }
}

impl Drop for Persist {
    /// Finishes the queued writes before the replica goes away.
    fn drop(&mut self) {
        if let Backend::Thread(writer) = &mut self.backend {
            writer.jobs.take();
            for handle in writer.handles.drain(..) {
                let _ = handle.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::protocol::{Checkpoint, Commit, LogEntry, Reply, Request};
    use crate::protocol::{Outcome, Store};
    use crate::storage::{Action, Disk, Failpoint, Faulty, MemDisk, Op};

    fn commit(sequence: u64) -> Commit {
        Commit { committer: 0, sequence, view: 0, request: Request::noop() }
    }

    fn outbox(sequence: u64) -> Outbox {
        let mut out = Outbox::default();
        out.log.push(LogEntry::Stable(sequence));
        out.commits.push(commit(sequence));
        out
    }

    fn committer_store(disk: &Arc<dyn Disk>) -> ReplicaStore {
        ReplicaStore::open(disk, Path::new("/state"), Stage::Committer, 0, true).unwrap().store
    }

    fn sequences(sent: &[Tuple]) -> Vec<u64> {
        sent.iter().filter_map(|t| if let Tuple::Commit(c) = t { Some(c.sequence) } else { None }).collect()
    }

    /// Section III-E host duty: a commit leaves after its record is durable, in order; tuples
    /// that depend on nothing durable (an executor's reply) pass at once.
    #[test]
    fn tuples_wait_for_the_writes_before_them() {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let mut persist = Persist::manual(committer_store(&disk));
        let mut sent = Vec::new();
        persist.send(&mut outbox(1), &mut |t| sent.push(t)).unwrap();
        persist.send(&mut outbox(2), &mut |t| sent.push(t)).unwrap();
        let mut reply = Outbox::default();
        let answer = Reply {
            executor: 0,
            source: 0,
            request: 1,
            index: 0,
            client: 1,
            timestamp: 1,
            outcome: Outcome::Executed,
            result: vec![],
        };
        reply.replies.push(answer);
        persist.send(&mut reply, &mut |t| sent.push(t)).unwrap();
        assert_eq!(sent.len(), 1, "only the reply passed");
        assert!(persist.pending());
        persist.flush();
        persist.release(&mut |t| sent.push(t)).unwrap();
        assert_eq!(sequences(&sent), vec![1, 2]);
        assert!(!persist.pending());
    }

    /// A failed write is never acknowledged: what waited for it, and for every later write, is
    /// never released, even if a later sync succeeds (before, a later successful sync reported
    /// a higher batch and released the failed batch's commits as well).
    #[test]
    fn a_failed_write_releases_nothing_ever_again() {
        let faulty = Faulty::new(MemDisk::new());
        let disk: Arc<dyn Disk> = Arc::new(faulty.clone());
        let store = committer_store(&disk);
        faulty.arm(Failpoint::new("records.log", Op::Sync, 0, Action::Fail));
        let (wake, woken) = crossbeam_channel::unbounded();
        let wake = Box::new(move || {
            let _ = wake.send(());
        });
        let mut persist = Persist::threaded(Stage::Committer, 0, store, wake).unwrap();
        let mut sent = Vec::new();
        persist.send(&mut outbox(1), &mut |t| sent.push(t)).unwrap();
        woken.recv_timeout(Duration::from_secs(10)).unwrap();
        let error = persist.send(&mut outbox(2), &mut |t| sent.push(t)).unwrap_err();
        assert!(error.to_string().contains("records.log"), "{error}");
        std::thread::sleep(Duration::from_millis(50));
        assert!(persist.release(&mut |t| sent.push(t)).is_err());
        assert!(sent.is_empty(), "a commit of a failed batch left: {sent:?}");
        // Ending the gate after a failure returns at once with the failure (it used to hang).
        assert!(persist.finish().is_err());
    }

    /// Group commit on a writer thread: a restart reads back everything written before it.
    #[test]
    fn finishing_waits_for_queued_writes() {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let mut persist = Persist::threaded(Stage::Committer, 0, committer_store(&disk), Box::new(|| {})).unwrap();
        let mut sent = Vec::new();
        for sequence in 1..=100 {
            persist.send(&mut outbox(sequence), &mut |t| sent.push(t)).unwrap();
        }
        persist.finish().unwrap();
        let reopened = ReplicaStore::open(&disk, Path::new("/state"), Stage::Committer, 0, true).unwrap();
        let crate::protocol::Recovered::Log(entries) = reopened.recovered else { panic!("a log") };
        assert_eq!(entries.len(), 100);
    }

    /// An executor's checkpoint announcement waits for its store.
    #[test]
    fn an_announcement_waits_for_its_checkpoint() {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let store = ReplicaStore::open(&disk, Path::new("/state"), Stage::Executor, 0, true).unwrap().store;
        let mut persist = Persist::manual(store);
        let mut out = Outbox::default();
        let state = Arc::new(crate::protocol::frame::frame(4, b"s"));
        out.stores.push(Store { executor: 0, sequence: 4, state });
        out.checkpoints.push(Checkpoint { executor: 0, sequence: 4 });
        let mut sent = Vec::new();
        persist.send(&mut out, &mut |t| sent.push(t)).unwrap();
        assert!(sent.is_empty());
        persist.flush();
        persist.release(&mut |t| sent.push(t)).unwrap();
        assert_eq!(sent, vec![Tuple::Checkpoint(Checkpoint { executor: 0, sequence: 4 })]);
    }

    /// A gate whose writer is a channel the test feeds with reports, as lanes would send them.
    fn reported() -> (Persist, Sender<Report>) {
        let (report, done) = crossbeam_channel::unbounded();
        let writer = Writer { jobs: None, done, handles: Vec::new() };
        let mut persist = Persist::with(Backend::Thread(writer));
        persist.issued = 2;
        persist.held.extend([(1, Tuple::Commit(commit(1))), (2, Tuple::Commit(commit(2)))]);
        (persist, report)
    }

    /// Two syncs in flight: the second may finish first, but what it covers is released only
    /// once the first has succeeded too, and never if the first failed (with one fd shared by
    /// two syncs, the later sync need not report the earlier one's lost write).
    #[test]
    fn a_later_sync_releases_nothing_before_an_earlier_one_succeeds() {
        let (mut persist, report) = reported();
        let mut sent = Vec::new();
        report.send((2, Ok(2))).unwrap();
        persist.release(&mut |t| sent.push(t)).unwrap();
        assert!(sent.is_empty(), "released before the earlier sync finished: {sent:?}");
        report.send((1, Ok(1))).unwrap();
        persist.release(&mut |t| sent.push(t)).unwrap();
        assert_eq!(sequences(&sent), vec![1, 2]);

        let (mut persist, report) = reported();
        report.send((2, Ok(2))).unwrap();
        let failure = StorageError::new(Path::new("/state/x"), crate::storage::Problem::WriteFailed, "lost");
        report.send((1, Err(failure))).unwrap();
        assert!(persist.release(&mut |t| sent.push(t)).is_err());
        assert_eq!(sequences(&sent), vec![1, 2], "nothing more left");
    }

    /// Pipelined group commit: a write issued while a sync runs is synced by the second lane
    /// at once, not after the first sync: two slow syncs overlap.
    #[test]
    fn a_write_during_a_sync_does_not_wait_for_it() {
        let faulty = Faulty::new(MemDisk::new());
        let disk: Arc<dyn Disk> = Arc::new(faulty.clone());
        let store = committer_store(&disk);
        // Long syncs, so that the margin between overlapped (one sync) and serial (two syncs)
        // is seconds: the test holds on a loaded machine.
        faulty.arm(Failpoint::new("records.log", Op::Sync, 0, Action::DelayForever(2_500)));
        let (wake, woken) = crossbeam_channel::unbounded();
        let wake = Box::new(move || {
            let _ = wake.send(());
        });
        let mut persist = Persist::threaded(Stage::Committer, 0, store, wake).unwrap();
        let (start, mut sent) = (Instant::now(), Vec::new());
        persist.send(&mut outbox(1), &mut |t| sent.push(t)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        persist.send(&mut outbox(2), &mut |t| sent.push(t)).unwrap();
        while sent.len() < 2 && start.elapsed() < Duration::from_secs(20) {
            let _ = woken.recv_timeout(Duration::from_millis(50));
            persist.release(&mut |t| sent.push(t)).unwrap();
        }
        assert_eq!(sequences(&sent), vec![1, 2]);
        // Serial syncs would take 5 s at least; overlapped, 2.55 s and scheduling.
        assert!(start.elapsed() < Duration::from_millis(4_500), "the syncs did not overlap: {:?}", start.elapsed());
        persist.finish().unwrap();
    }

    /// Checkpoints queued together: only the newest is written, once.
    #[test]
    fn only_the_newest_queued_checkpoint_is_written() {
        let store = |sequence| Store { executor: 0, sequence, state: Arc::new(Vec::new()) };
        let writes =
            |sequences: &[u64]| Writes { stores: sequences.iter().map(|s| store(*s)).collect(), ..Writes::default() };
        let mut batches = vec![(1, writes(&[16])), (2, writes(&[32, 48])), (3, writes(&[48])), (4, Writes::default())];
        newest_checkpoint_only(&mut batches);
        let kept: Vec<(u64, u64)> =
            batches.iter().flat_map(|(ticket, w)| w.stores.iter().map(move |s| (*ticket, s.sequence))).collect();
        assert_eq!(kept, vec![(3, 48)]);
    }
}
