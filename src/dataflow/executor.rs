//! The executor operator: hosts the [`Executor`] replicas of its worker and their checkpoint
//! directories.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use timely::dataflow::Stream;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::scheduling::SyncActivator;

use super::control::{Control, ReplicaStats};
use super::deployment::Deployment;
use super::placement::{Placement, Stage};
use super::pulse::{Out, Pulse, give};
use super::routed::{Local, Routed, by_worker, multicast};
use crate::app::Application;
use crate::protocol::{
    Actual, Checkpoint, Commit, Executed, Executor, ExecutorOutbox, Fetch, Nack, Reply, Stable, Store, Transfer, View,
};
use crate::storage::CheckpointStore;

/// The streams an executor operator emits.
pub struct ExecutorStreams<'s> {
    /// Replies, routed to the worker of each command's request source.
    pub replies: Stream<'s, u64, Vec<Routed<Reply>>>,
    /// Checkpoint notifications, routed to every garbage-collection source.
    pub checkpoints: Stream<'s, u64, Vec<Routed<Checkpoint>>>,
    /// Executed commands of the local replicas (empty unless enabled), not exchanged.
    pub executed: Stream<'s, u64, Vec<Executed>>,
    /// State-transfer requests, routed to the executor asked.
    pub fetches: Stream<'s, u64, Vec<Routed<Fetch>>>,
    /// Checkpoints for lagging executors, routed to them.
    pub transfers: Stream<'s, u64, Vec<Routed<Transfer>>>,
    /// Requests to repeat a proposal, routed to the proposer asked.
    pub nacks: Stream<'s, u64, Vec<Routed<Nack>>>,
    /// Progress reports, to every controller.
    pub actuals: Stream<'s, u64, Vec<Routed<Actual>>>,
}

/// The inputs of the executor operator.
pub struct ExecutorInputs<'s> {
    /// Commits from the committers.
    pub commits: Stream<'s, u64, Vec<Routed<Commit>>>,
    /// Stability thresholds (garbage-collection loop).
    pub stable: Stream<'s, u64, Vec<Routed<Stable>>>,
    /// State-transfer requests from lagging peers (state-transfer loop).
    pub fetches: Stream<'s, u64, Vec<Routed<Fetch>>>,
    /// Checkpoints from peers (state-transfer loop).
    pub transfers: Stream<'s, u64, Vec<Routed<Transfer>>>,
    /// Views from the controllers (view loop).
    pub views: Stream<'s, u64, Vec<Routed<View>>>,
}

/// Executes committed requests in order on one application instance per replica; with a state
/// directory, makes checkpoints durable before announcing them and restarts from them.
pub fn executors<'s, A, F>(inputs: ExecutorInputs<'s>, deployment: &Deployment, app: F) -> ExecutorStreams<'s>
where
    A: Application + 'static,
    F: Fn(u32) -> A + 'static,
{
    let scope = inputs.commits.scope();
    let placement = deployment.placement.clone();
    let mut builder = OperatorBuilder::new("Executor".to_owned(), scope);
    let info = builder.operator_info();
    let mut commits_in = builder.new_input(inputs.commits, by_worker());
    let mut stable_in = builder.new_input(inputs.stable, by_worker());
    let mut fetches_in = builder.new_input(inputs.fetches, by_worker());
    let mut transfers_in = builder.new_input(inputs.transfers, by_worker());
    let mut views_in = builder.new_input(inputs.views, by_worker());
    let (mut outputs, (replies, checkpoints, executed, fetches, transfers, nacks, actuals)) =
        Outputs::new(&mut builder);

    let ids = placement.replicas_on(Stage::Executor, scope.index());
    let stores = open_stores(deployment, &ids);
    let mut writers: BTreeMap<u32, Writer> = stores
        .iter()
        .map(|(id, store)| {
            (*id, Writer::spawn(*id, store.clone(), scope.worker().sync_activator_for(info.address.to_vec())))
        })
        .collect();
    let (params, emit) = (deployment.params.clone(), deployment.emit_executed);
    let make = move |id: u32| {
        let executor = Executor::new(id, &params, app(id)).emit_executed(emit);
        recover(executor, stores.get(&id))
    };
    let mut local = Local::new(Stage::Executor, ids, &make);
    let (control, epoch_ms) = (deployment.control.clone(), deployment.epoch_ms);
    let activator = scope.activator_for(info.address.clone());

    builder.build(move |caps| {
        let mut pulse = Pulse::new(caps, activator, control.clone(), epoch_ms, !local.is_empty());
        let mut out = ExecutorOutbox::default();
        move |_frontiers| {
            let alive = pulse.begin();
            local.sync(&control, &make);
            let now_us = pulse.now_us();
            views_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver(routed.replica, |e| e.on_view(routed.tuple));
                }
            });
            stable_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver(routed.replica, |e| e.on_stable(routed.tuple));
                }
            });
            transfers_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver(routed.replica, |e| e.on_transfer(routed.tuple.clone(), &mut out));
                }
            });
            fetches_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver(routed.replica, |e| e.on_fetch(routed.tuple, &mut out));
                }
            });
            commits_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver_input(&control, routed.replica, |e| e.on_commit(routed.tuple.clone(), &mut out));
                }
            });
            if !alive {
                return;
            }
            let stopping = pulse.stopping();
            let mut stores = std::mem::take(&mut out.stores);
            for (id, executor) in local.iter_mut() {
                executor.on_tick(now_us, &mut out);
                stores.append(&mut out.stores);
                persist(id, executor, writers.get_mut(&id), &mut stores, &mut out);
                publish(&control, id, executor, stopping);
            }
            outputs.send(&pulse, &placement, &mut out);
            if stopping {
                pulse.release();
            }
            pulse.end(None);
        }
    });
    ExecutorStreams { replies, checkpoints, executed, fetches, transfers, nacks, actuals }
}

/// The checkpoint directory of every local executor, if the deployment has a state directory.
fn open_stores(deployment: &Deployment, ids: &[u32]) -> BTreeMap<u32, CheckpointStore> {
    let Some(root) = deployment.state_dir.as_ref() else { return BTreeMap::new() };
    let mut stores = BTreeMap::new();
    for id in ids {
        let dir = root.join(format!("executor-{id}"));
        match CheckpointStore::open(&dir) {
            Ok(store) => {
                stores.insert(*id, store);
            }
            Err(e) => tracing::error!("executor {id}: cannot open checkpoint directory {}: {e}", dir.display()),
        }
    }
    stores
}

/// A (re)started executor loads its newest intact checkpoint, if it has one on disk.
fn recover<A: Application>(mut executor: Executor<A>, store: Option<&CheckpointStore>) -> Executor<A> {
    let Some(store) = store else { return executor };
    let id = executor.id();
    match store.load_newest() {
        Ok(loaded) => {
            for r in loaded.rejected {
                tracing::warn!("executor {id}: rejected checkpoint {}: {}", r.path.display(), r.reason);
            }
            if let Some((sequence, bytes)) = loaded.newest {
                match executor.restore_checkpoint(sequence, Arc::new(bytes)) {
                    Ok(()) => {
                        tracing::info!("executor {id}: restored checkpoint {sequence} from {}", store.dir().display());
                        executor.on_stored(sequence, &mut ExecutorOutbox::default());
                    }
                    Err(e) => tracing::warn!("executor {id}: checkpoint {sequence} does not restore: {e}"),
                }
            }
        }
        Err(e) => tracing::error!("executor {id}: cannot read {}: {e}", store.dir().display()),
    }
    executor
}

/// Host duty for checkpoints: hand this replica's new ones to its writer (or, without a state
/// directory, treat them as stored), and announce the ones the writer finished.
fn persist<A: Application>(
    id: u32,
    executor: &mut Executor<A>,
    writer: Option<&mut Writer>,
    stores: &mut Vec<Store>,
    out: &mut ExecutorOutbox,
) {
    let mine: Vec<Store> = stores.extract_if(.., |s| s.executor == id).collect();
    match writer {
        None => mine.iter().for_each(|s| executor.on_stored(s.sequence, out)),
        Some(writer) => {
            for store in mine {
                writer.write(store.sequence, store.state);
            }
            for sequence in writer.done.try_iter() {
                executor.on_stored(sequence, out);
            }
        }
    }
}

fn publish<A: Application>(control: &Control, id: u32, executor: &Executor<A>, stopping: bool) {
    let Some(stats) = control.stats(Stage::Executor, id) else { return };
    ReplicaStats::set(&stats.next, executor.next());
    ReplicaStats::set(&stats.view, executor.view());
    ReplicaStats::set(&stats.count, executor.executed());
    ReplicaStats::set(&stats.history, executor.history());
    stats.set_held(executor.held() as u64);
    ReplicaStats::set(&stats.stable, executor.stable());
    ReplicaStats::set(&stats.transfers, executor.transfers_restored());
    ReplicaStats::set(&stats.repairs, executor.nacks_sent());
    ReplicaStats::set(&stats.stored, executor.durable().unwrap_or(0));
    if stopping {
        ReplicaStats::set(&stats.state_digest, executor.state_digest());
    }
}

/// A thread that writes one executor's checkpoints to disk, so that the worker never waits for
/// an fsync; it reports each durable checkpoint back and wakes the operator.
struct Writer {
    sender: Option<Sender<(u64, Arc<Vec<u8>>)>>,
    done: Receiver<u64>,
    handle: Option<JoinHandle<()>>,
}

impl Writer {
    fn spawn(id: u32, store: CheckpointStore, wake: SyncActivator) -> Writer {
        let (sender, requests) = crossbeam_channel::unbounded::<(u64, Arc<Vec<u8>>)>();
        let (finished, done) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new().name(format!("tara-checkpoints-e{id}"));
        let handle = thread.spawn(move || {
            for (sequence, state) in requests {
                match store.write(sequence, &state) {
                    Ok(()) => {
                        let _ = finished.send(sequence);
                        let _ = wake.activate();
                    }
                    Err(e) => tracing::error!("executor {id}: cannot write checkpoint {sequence}: {e}"),
                }
            }
        });
        match handle {
            Ok(handle) => Writer { sender: Some(sender), done, handle: Some(handle) },
            Err(e) => {
                tracing::error!("executor {id}: cannot start the checkpoint writer: {e}");
                Writer { sender: None, done, handle: None }
            }
        }
    }

    fn write(&mut self, sequence: u64, state: Arc<Vec<u8>>) {
        if let Some(sender) = &self.sender {
            let _ = sender.send((sequence, state));
        }
    }
}

impl Drop for Writer {
    /// Finishes the queued writes before the dataflow goes away.
    fn drop(&mut self) {
        self.sender.take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

type OutputStreams<'s> = (
    Stream<'s, u64, Vec<Routed<Reply>>>,
    Stream<'s, u64, Vec<Routed<Checkpoint>>>,
    Stream<'s, u64, Vec<Executed>>,
    Stream<'s, u64, Vec<Routed<Fetch>>>,
    Stream<'s, u64, Vec<Routed<Transfer>>>,
    Stream<'s, u64, Vec<Routed<Nack>>>,
    Stream<'s, u64, Vec<Routed<Actual>>>,
);

struct Outputs {
    replies: Out<Routed<Reply>>,
    checkpoints: Out<Routed<Checkpoint>>,
    executed: Out<Executed>,
    fetches: Out<Routed<Fetch>>,
    transfers: Out<Routed<Transfer>>,
    nacks: Out<Routed<Nack>>,
    actuals: Out<Routed<Actual>>,
}

impl Outputs {
    fn new<'s>(builder: &mut OperatorBuilder<'s, u64>) -> (Outputs, OutputStreams<'s>) {
        let (replies_out, replies) = builder.new_output();
        let (checkpoints_out, checkpoints) = builder.new_output();
        let (executed_out, executed) = builder.new_output();
        let (fetches_out, fetches) = builder.new_output();
        let (transfers_out, transfers) = builder.new_output();
        let (nacks_out, nacks) = builder.new_output();
        let (actuals_out, actuals) = builder.new_output();
        let outputs = Outputs {
            replies: OutputBuilder::from(replies_out),
            checkpoints: OutputBuilder::from(checkpoints_out),
            executed: OutputBuilder::from(executed_out),
            fetches: OutputBuilder::from(fetches_out),
            transfers: OutputBuilder::from(transfers_out),
            nacks: OutputBuilder::from(nacks_out),
            actuals: OutputBuilder::from(actuals_out),
        };
        (outputs, (replies, checkpoints, executed, fetches, transfers, nacks, actuals))
    }

    fn send(&mut self, pulse: &Pulse, placement: &Placement, out: &mut ExecutorOutbox) {
        let gc = placement.stage(Stage::Gc);
        let replies = out.replies.drain(..).map(|r| Routed::to(placement, Stage::Source, r.source, r));
        give(&mut self.replies, pulse.send_cap(0), replies);
        give(&mut self.checkpoints, pulse.send_cap(1), out.checkpoints.drain(..).flat_map(|c| multicast(gc, c)));
        give(&mut self.executed, pulse.send_cap(2), out.executed.drain(..));
        let fetches = out.fetches.drain(..).map(|f| Routed::to(placement, Stage::Executor, f.to, f));
        give(&mut self.fetches, pulse.send_cap(3), fetches);
        let transfers = out.transfers.drain(..).map(|t| Routed::to(placement, Stage::Executor, t.to, t));
        give(&mut self.transfers, pulse.send_cap(4), transfers);
        let nacks = out.nacks.drain(..).map(|n| Routed::to(placement, Stage::Proposer, n.to, n));
        give(&mut self.nacks, pulse.send_cap(5), nacks);
        let controllers = placement.stage(Stage::Controller);
        give(&mut self.actuals, pulse.send_cap(6), out.actuals.drain(..).flat_map(|a| multicast(controllers, a)));
    }
}
