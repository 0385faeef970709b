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

use std::collections::VecDeque;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::error::StorageError;
use super::replica::ReplicaStore;
use crate::protocol::topology::route;
use crate::protocol::{Outbox, Stage, Tuple, Writes};

/// Batches of writes a replica may have queued for its writer thread before the worker waits.
pub const WRITES_QUEUED_MAX: usize = 4096;

/// A writer thread and its two channels.
struct Writer {
    jobs: Option<Sender<(u64, Writes)>>,
    done: Receiver<Result<u64, StorageError>>,
    handle: Option<JoinHandle<()>>,
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

/// Applies queued batches in order and syncs once; the ticket of the last one, or the failure.
fn apply_all(store: &mut ReplicaStore, batches: impl Iterator<Item = (u64, Writes)>) -> Result<u64, StorageError> {
    let mut last = 0;
    for (ticket, writes) in batches {
        store.apply(&writes)?;
        last = ticket;
    }
    store.sync()?;
    Ok(last)
}

impl Persist {
    fn with(backend: Backend) -> Persist {
        Persist { backend, issued: 0, durable: 0, held: VecDeque::new(), failed: None }
    }

    /// Writes applied and synced on the caller's thread as they are issued.
    pub fn inline(store: ReplicaStore) -> Persist {
        Self::with(Backend::Inline(store))
    }

    /// Writes applied by a writer thread (named after replica `id` of `stage`), which calls
    /// `wake` after each group of writes is durable (or failed), so that the host releases what
    /// waited for them.
    pub fn threaded(
        stage: Stage,
        id: u32,
        mut store: ReplicaStore,
        wake: Box<dyn Fn() + Send>,
    ) -> std::io::Result<Persist> {
        let name = format!("tara-{}-{id}", stage.replica_name());
        let (jobs, queue) = crossbeam_channel::bounded::<(u64, Writes)>(WRITES_QUEUED_MAX);
        let (report, done) = crossbeam_channel::unbounded();
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            // Group commit: everything queued while the previous sync ran goes out with one sync.
            while let Ok(first) = queue.recv() {
                let result = apply_all(&mut store, std::iter::once(first).chain(queue.try_iter()));
                let failed = result.is_err();
                let _ = report.send(result);
                wake();
                if failed {
                    // Never acknowledge anything after a failed write.
                    return;
                }
            }
        })?;
        Ok(Self::with(Backend::Thread(Writer { jobs: Some(jobs), done, handle: Some(handle) })))
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
            let reports: Vec<Result<u64, StorageError>> = writer.done.try_iter().collect();
            for report in reports {
                match report {
                    Ok(ticket) => self.durable = self.durable.max(ticket),
                    Err(e) => self.fail(e),
                }
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
            if let Some(handle) = writer.handle.take() {
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
            if let Some(handle) = writer.handle.take() {
                let _ = handle.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

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
        let answer =
            Reply { executor: 0, source: 0, client: 1, timestamp: 1, outcome: Outcome::Executed, result: vec![] };
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
}
