//! The garbage-collection source operator: hosts the [`GcSource`] replicas of its worker.

use timely::dataflow::Stream;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::control::ReplicaStats;
use super::deployment::Deployment;
use super::placement::Stage;
use super::pulse::{Pulse, give};
use super::routed::{ALL_REPLICAS, Local, Routed, by_worker};
use crate::protocol::{Checkpoint, GcSource, Stable};

/// Turns checkpoint notifications into stability thresholds, sent to every worker that hosts a
/// proposer, committer or executor (the caller closes the loop back to them).
pub fn gc_sources<'s>(
    checkpoints: Stream<'s, u64, Vec<Routed<Checkpoint>>>,
    deployment: &Deployment,
) -> Stream<'s, u64, Vec<Routed<Stable>>> {
    let scope = checkpoints.scope();
    let placement = deployment.placement.clone();
    let mut builder = OperatorBuilder::new("GcSource".to_owned(), scope);
    let info = builder.operator_info();
    let mut checkpoints_in = builder.new_input(checkpoints, by_worker());
    let (output, stable) = builder.new_output();
    let mut output = OutputBuilder::from(output);

    let params = deployment.params.clone();
    let ids = placement.replicas_on(Stage::Gc, scope.index());
    let make = move |id| GcSource::new(id, &params);
    let mut local = Local::new(Stage::Gc, ids, make.clone());
    let (control, epoch_ms) = (deployment.control.clone(), deployment.epoch_ms);
    let activator = scope.activator_for(info.address.clone());
    let receivers = placement.workers_hosting(&[Stage::Proposer, Stage::Committer, Stage::Executor]);

    builder.build(move |caps| {
        let mut pulse = Pulse::new(caps, activator, control.clone(), epoch_ms, !local.is_empty());
        let mut out: Vec<Stable> = Vec::new();
        move |_frontiers| {
            let alive = pulse.begin();
            local.sync(&control, &make);
            let now_us = pulse.now_us();
            checkpoints_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver_input(&control, routed.replica, |g| g.on_checkpoint(routed.tuple, now_us, &mut out));
                }
            });
            if !alive {
                return;
            }
            for (id, gc) in local.iter_mut() {
                gc.on_tick(now_us, &mut out);
                if let Some(stats) = control.stats(Stage::Gc, id) {
                    ReplicaStats::set(&stats.stable, gc.threshold());
                }
            }
            let to_workers =
                |stable| receivers.iter().map(move |w| Routed { worker: *w, replica: ALL_REPLICAS, tuple: stable });
            give(&mut output, pulse.send_cap(0), out.drain(..).flat_map(to_workers));
            if pulse.stopping() {
                pulse.release();
            }
            pulse.end(None);
        }
    });
    stable
}
