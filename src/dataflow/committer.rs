//! The committer operator: hosts the [`Committer`] replicas of its worker and their record logs.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use timely::dataflow::Stream;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::scheduling::SyncActivator;

use super::control::ReplicaStats;
use super::deployment::Deployment;
use super::placement::Stage;
use super::pulse::{Pulse, give};
use super::routed::{Local, Routed, by_worker, multicast};
use crate::protocol::{Commit, Committer, CommitterOutbox, LogEntry, Params, Propose, Record, Stable, View};
use crate::storage::RecordLog;

/// What a committer operator emits.
pub struct CommitterStreams<'s> {
    /// Commits, to every executor.
    pub commits: Stream<'s, u64, Vec<Routed<Commit>>>,
    /// Records, to the proposer of the view in each.
    pub records: Stream<'s, u64, Vec<Routed<Record>>>,
}

/// Accepts proposals of the current view and multicasts each commit to every executor; on a
/// new view sends its records to the new proposer. With a state directory and durable records,
/// nothing leaves before the log entries it depends on are synced.
pub fn committers<'s>(
    proposals: Stream<'s, u64, Vec<Routed<Propose>>>,
    stable: Stream<'s, u64, Vec<Routed<Stable>>>,
    views: Stream<'s, u64, Vec<Routed<View>>>,
    deployment: &Deployment,
) -> CommitterStreams<'s> {
    let scope = proposals.scope();
    let placement = deployment.placement.clone();
    let mut builder = OperatorBuilder::new("Committer".to_owned(), scope);
    let info = builder.operator_info();
    let mut proposals_in = builder.new_input(proposals, by_worker());
    let mut stable_in = builder.new_input(stable, by_worker());
    let mut views_in = builder.new_input(views, by_worker());
    let (commits_out, commits) = builder.new_output();
    let (records_out, records) = builder.new_output();
    let (mut commits_out, mut records_out) = (OutputBuilder::from(commits_out), OutputBuilder::from(records_out));

    let ids = placement.replicas_on(Stage::Committer, scope.index());
    let wake = || scope.worker().sync_activator_for(info.address.to_vec());
    let logs: Rc<RefCell<BTreeMap<u32, Durability>>> =
        Rc::new(RefCell::new(ids.iter().map(|id| (*id, Durability::open(deployment, *id, wake()))).collect()));
    let params = deployment.params.clone();
    let recovering_logs = logs.clone();
    let make = move |id: u32| recover(id, &params, recovering_logs.borrow_mut().get_mut(&id));
    let mut local = Local::new(Stage::Committer, ids, &make);
    let (control, epoch_ms) = (deployment.control.clone(), deployment.epoch_ms);
    let activator = scope.activator_for(info.address.clone());
    let executors = placement.stage(Stage::Executor).to_vec();
    let compact_after = 8 * deployment.params.window;

    builder.build(move |caps| {
        let mut pulse = Pulse::new(caps, activator, control.clone(), epoch_ms, !local.is_empty());
        let mut outs: BTreeMap<u32, CommitterOutbox> = BTreeMap::new();
        move |_frontiers| {
            let alive = pulse.begin();
            local.sync(&control, &make);
            let now_us = pulse.now_us();
            stable_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver_to(routed.replica, |id, k| k.on_stable(routed.tuple, outs.entry(id).or_default()));
                }
            });
            views_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver_to(routed.replica, |id, k| {
                        k.on_view(routed.tuple, now_us, outs.entry(id).or_default())
                    });
                }
            });
            proposals_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver_input(&control, routed.replica, |k| {
                        let out = outs.entry(k.id()).or_default();
                        k.on_propose(routed.tuple.clone(), out)
                    });
                }
            });
            if !alive {
                return;
            }
            let mut logs = logs.borrow_mut();
            let (mut commits, mut records) = (Vec::new(), Vec::new());
            for (id, committer) in local.iter_mut() {
                let mut out = outs.remove(&id).unwrap_or_default();
                committer.on_tick(now_us, &mut out);
                if let Some(durability) = logs.get_mut(&id) {
                    durability.submit(out, committer, compact_after);
                    durability.release(&mut commits, &mut records);
                }
                if let Some(stats) = control.stats(Stage::Committer, id) {
                    ReplicaStats::set(&stats.count, committer.accepted());
                    ReplicaStats::set(&stats.next, committer.view());
                    stats.set_held(committer.held() as u64);
                }
            }
            outs.clear();
            give(&mut commits_out, pulse.send_cap(0), commits.into_iter().flat_map(|c| multicast(&executors, c)));
            let records = records.into_iter().map(|r| {
                Routed::to(
                    &placement,
                    Stage::Proposer,
                    (r.view % placement.stage(Stage::Proposer).len() as u64) as u32,
                    r,
                )
            });
            give(&mut records_out, pulse.send_cap(1), records);
            if pulse.stopping() {
                pulse.release();
            }
            pulse.end(None);
        }
    });
    CommitterStreams { commits, records }
}

/// A (re)started committer replays its log before it answers anything.
fn recover(id: u32, params: &Params, durability: Option<&mut Durability>) -> Committer {
    let Some(dir) = durability.and_then(|d| d.wait_idle()) else { return Committer::new(id, params) };
    match RecordLog::load(&dir) {
        Ok(loaded) => {
            if loaded.torn_bytes > 0 {
                tracing::warn!("committer {id}: ignored a torn log tail of {} bytes", loaded.torn_bytes);
            }
            tracing::info!("committer {id}: replayed {} log entries from {}", loaded.entries.len(), dir.display());
            Committer::recover(id, params, loaded.entries)
        }
        Err(e) => {
            tracing::error!("committer {id}: cannot read its record log in {}: {e}", dir.display());
            Committer::new(id, params)
        }
    }
}

/// Outputs that wait until the log entries they depend on are synced.
struct Held {
    batch: u64,
    commits: Vec<Commit>,
    records: Vec<Record>,
}

enum Job {
    Append(u64, Vec<LogEntry>),
    Compact(u64, Vec<LogEntry>),
}

/// One committer's path to its durable log: a writer thread that appends and syncs batches
/// (group commit), and the outputs held until their batch is synced.
struct Durability {
    dir: Option<PathBuf>,
    sender: Option<Sender<Job>>,
    done: Option<Receiver<u64>>,
    handle: Option<JoinHandle<()>>,
    issued: u64,
    synced: u64,
    appended: u64,
    held: VecDeque<Held>,
}

impl Durability {
    /// A writer for committer `id`'s log, if the deployment keeps durable records; otherwise
    /// outputs pass straight through.
    fn open(deployment: &Deployment, id: u32, wake: SyncActivator) -> Durability {
        let mut durability = Durability {
            dir: None,
            sender: None,
            done: None,
            handle: None,
            issued: 0,
            synced: 0,
            appended: 0,
            held: VecDeque::new(),
        };
        let Some(root) = deployment.state_dir.as_ref().filter(|_| deployment.durable_records) else {
            return durability;
        };
        let dir = root.join(format!("committer-{id}"));
        let mut log = match RecordLog::open(&dir) {
            Ok(log) => log,
            Err(e) => {
                tracing::error!("committer {id}: cannot open its record log in {}: {e}", dir.display());
                return durability;
            }
        };
        let (sender, jobs) = crossbeam_channel::unbounded::<Job>();
        let (finished, done) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new().name(format!("tara-records-k{id}"));
        let handle = thread.spawn(move || {
            // Group commit: everything queued while the previous sync ran is written and then
            // synced once.
            while let Ok(first) = jobs.recv() {
                let mut last = 0;
                let mut result = Ok(());
                for job in std::iter::once(first).chain(jobs.try_iter()) {
                    let (batch, written) = match job {
                        Job::Append(batch, entries) => (batch, log.write(&entries)),
                        Job::Compact(batch, entries) => (batch, log.compact(&entries)),
                    };
                    last = batch;
                    result = result.and(written);
                }
                match result.and_then(|()| log.sync()) {
                    Ok(()) => {
                        let _ = finished.send(last);
                        let _ = wake.activate();
                    }
                    // Never acknowledge what is not on disk: the committer stays silent.
                    Err(e) => tracing::error!("committer {id}: cannot write its record log: {e}"),
                }
            }
        });
        if let Ok(handle) = handle {
            durability.dir = Some(dir);
            durability.sender = Some(sender);
            durability.done = Some(done);
            durability.handle = Some(handle);
        }
        durability
    }

    /// Queues the outbox: its log entries go to the writer, its tuples wait for them.
    fn submit(&mut self, out: CommitterOutbox, committer: &Committer, compact_after: u64) {
        let Some(sender) = &self.sender else {
            self.held.push_back(Held { batch: 0, commits: out.commits, records: out.records });
            return;
        };
        if !out.log.is_empty() {
            self.issued += 1;
            self.appended += out.log.len() as u64;
            let _ = sender.send(Job::Append(self.issued, out.log));
        }
        if self.appended > compact_after {
            self.issued += 1;
            self.appended = 0;
            let _ = sender.send(Job::Compact(self.issued, committer.log_snapshot()));
        }
        if !out.commits.is_empty() || !out.records.is_empty() {
            self.held.push_back(Held { batch: self.issued, commits: out.commits, records: out.records });
        }
    }

    /// Moves every output whose log entries are synced into `commits` and `records`.
    fn release(&mut self, commits: &mut Vec<Commit>, records: &mut Vec<Record>) {
        if let Some(done) = &self.done {
            self.synced = done.try_iter().fold(self.synced, u64::max);
        }
        while self.held.front().is_some_and(|h| h.batch <= self.synced) {
            if let Some(held) = self.held.pop_front() {
                commits.extend(held.commits);
                records.extend(held.records);
            }
        }
    }

    /// Waits until the writer has written everything queued (a restart must read a complete
    /// log); drops the outputs of the crashed incarnation. Returns the log's directory.
    fn wait_idle(&mut self) -> Option<PathBuf> {
        self.held.clear();
        let done = self.done.as_ref()?;
        while self.synced < self.issued {
            match done.recv() {
                Ok(batch) => self.synced = self.synced.max(batch),
                Err(_) => break,
            }
        }
        self.dir.clone()
    }
}

impl Drop for Durability {
    /// Finishes the queued writes before the dataflow goes away.
    fn drop(&mut self) {
        self.sender.take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
