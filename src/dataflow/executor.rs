//! The executor operator: hosts the [`Executor`] replicas of its worker.

use timely::dataflow::Stream;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::control::{Control, ReplicaStats};
use super::deployment::Deployment;
use super::placement::{Placement, Stage};
use super::pulse::{Out, Pulse, give};
use super::routed::{Local, Routed, by_worker, multicast};
use crate::app::Application;
use crate::protocol::{Checkpoint, Commit, Executed, Executor, ExecutorOutbox, Fetch, Nack, Reply, Stable, Transfer};

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
}

/// Executes committed requests in order on one application instance per replica.
pub fn executors<'s, A: Application + 'static>(
    inputs: ExecutorInputs<'s>,
    deployment: &Deployment,
    app: &dyn Fn(u32) -> A,
) -> ExecutorStreams<'s> {
    let scope = inputs.commits.scope();
    let placement = deployment.placement.clone();
    let mut builder = OperatorBuilder::new("Executor".to_owned(), scope);
    let info = builder.operator_info();
    let mut commits_in = builder.new_input(inputs.commits, by_worker());
    let mut stable_in = builder.new_input(inputs.stable, by_worker());
    let mut fetches_in = builder.new_input(inputs.fetches, by_worker());
    let mut transfers_in = builder.new_input(inputs.transfers, by_worker());
    let (replies_out, replies) = builder.new_output();
    let (checkpoints_out, checkpoints) = builder.new_output();
    let (executed_out, executed) = builder.new_output();
    let (fetches_out, fetches) = builder.new_output();
    let (transfers_out, transfers) = builder.new_output();
    let (nacks_out, nacks) = builder.new_output();
    let mut outputs = Outputs {
        replies: OutputBuilder::from(replies_out),
        checkpoints: OutputBuilder::from(checkpoints_out),
        executed: OutputBuilder::from(executed_out),
        fetches: OutputBuilder::from(fetches_out),
        transfers: OutputBuilder::from(transfers_out),
        nacks: OutputBuilder::from(nacks_out),
    };

    let params = deployment.params.clone();
    let emit = deployment.emit_executed;
    let ids = placement.replicas_on(Stage::Executor, scope.index());
    let replicas = ids.iter().map(|id| (*id, Executor::new(*id, &params, app(*id)).emit_executed(emit))).collect();
    let mut local = Local::new(replicas);
    let (control, epoch_ms) = (deployment.control.clone(), deployment.epoch_ms);
    let activator = scope.activator_for(info.address.clone());

    builder.build(move |caps| {
        let mut pulse = Pulse::new(caps, activator, control.clone(), epoch_ms, !local.is_empty());
        let mut out = ExecutorOutbox::default();
        move |_frontiers| {
            let alive = pulse.begin();
            let now_us = pulse.now_us();
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
                    local.deliver(routed.replica, |e| e.on_commit(routed.tuple.clone(), &mut out));
                }
            });
            if !alive {
                return;
            }
            let stopping = pulse.stopping();
            for (id, executor) in local.iter_mut() {
                executor.on_tick(now_us, &mut out);
                publish(&control, id, executor, stopping);
            }
            outputs.send(&pulse, &placement, &mut out);
            if stopping {
                pulse.release();
            }
            pulse.end(None);
        }
    });
    ExecutorStreams { replies, checkpoints, executed, fetches, transfers, nacks }
}

fn publish<A: Application>(control: &Control, id: u32, executor: &Executor<A>, stopping: bool) {
    let Some(stats) = control.stats(Stage::Executor, id) else { return };
    ReplicaStats::set(&stats.next, executor.next());
    ReplicaStats::set(&stats.count, executor.executed());
    ReplicaStats::set(&stats.history, executor.history());
    ReplicaStats::set(&stats.held, executor.held() as u64);
    ReplicaStats::set(&stats.stable, executor.stable());
    ReplicaStats::set(&stats.transfers, executor.transfers_restored());
    ReplicaStats::set(&stats.repairs, executor.nacks_sent());
    if stopping {
        ReplicaStats::set(&stats.state_digest, executor.state_digest());
    }
}

struct Outputs {
    replies: Out<Routed<Reply>>,
    checkpoints: Out<Routed<Checkpoint>>,
    executed: Out<Executed>,
    fetches: Out<Routed<Fetch>>,
    transfers: Out<Routed<Transfer>>,
    nacks: Out<Routed<Nack>>,
}

impl Outputs {
    fn send(&mut self, pulse: &Pulse, placement: &Placement, out: &mut ExecutorOutbox) {
        let gc = placement.stage(Stage::Gc);
        give(
            &mut self.replies,
            pulse.send_cap(0),
            out.replies.drain(..).map(|r| Routed::to(placement, Stage::Source, r.source, r)),
        );
        give(&mut self.checkpoints, pulse.send_cap(1), out.checkpoints.drain(..).flat_map(|c| multicast(gc, c)));
        give(&mut self.executed, pulse.send_cap(2), out.executed.drain(..));
        give(
            &mut self.fetches,
            pulse.send_cap(3),
            out.fetches.drain(..).map(|f| Routed::to(placement, Stage::Executor, f.to, f)),
        );
        give(
            &mut self.transfers,
            pulse.send_cap(4),
            out.transfers.drain(..).map(|t| Routed::to(placement, Stage::Executor, t.to, t)),
        );
        give(
            &mut self.nacks,
            pulse.send_cap(5),
            out.nacks.drain(..).map(|n| Routed::to(placement, Stage::Proposer, n.to, n)),
        );
    }
}
