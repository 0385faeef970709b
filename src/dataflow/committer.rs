//! The committer operator: hosts the [`Committer`] replicas of its worker.

use timely::dataflow::Stream;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::control::ReplicaStats;
use super::deployment::Deployment;
use super::placement::Stage;
use super::pulse::{Pulse, give};
use super::routed::{Local, Routed, by_worker, multicast};
use crate::protocol::{Commit, Committer, Propose, Stable};

/// Accepts proposals of the current view and multicasts each commit to every executor.
pub fn committers<'s>(
    proposals: Stream<'s, u64, Vec<Routed<Propose>>>,
    stable: Stream<'s, u64, Vec<Routed<Stable>>>,
    deployment: &Deployment,
) -> Stream<'s, u64, Vec<Routed<Commit>>> {
    let scope = proposals.scope();
    let placement = deployment.placement.clone();
    let mut builder = OperatorBuilder::new("Committer".to_owned(), scope);
    let info = builder.operator_info();
    let mut proposals_in = builder.new_input(proposals, by_worker());
    let mut stable_in = builder.new_input(stable, by_worker());
    let (output, commits) = builder.new_output();
    let mut output = OutputBuilder::from(output);

    let params = deployment.params.clone();
    let ids = placement.replicas_on(Stage::Committer, scope.index());
    let make = move |id| Committer::new(id, &params);
    let mut local = Local::new(Stage::Committer, ids, make.clone());
    let (control, epoch_ms) = (deployment.control.clone(), deployment.epoch_ms);
    let activator = scope.activator_for(info.address.clone());
    let executors = placement.stage(Stage::Executor).to_vec();

    builder.build(move |caps| {
        let mut pulse = Pulse::new(caps, activator, control.clone(), epoch_ms, !local.is_empty());
        let mut out: Vec<Commit> = Vec::new();
        move |_frontiers| {
            let alive = pulse.begin();
            local.sync(&control, &make);
            stable_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver(routed.replica, |k| k.on_stable(routed.tuple));
                }
            });
            proposals_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver_input(&control, routed.replica, |k| k.on_propose(routed.tuple.clone(), &mut out));
                }
            });
            if !alive {
                return;
            }
            for (id, committer) in local.iter_mut() {
                if let Some(stats) = control.stats(Stage::Committer, id) {
                    ReplicaStats::set(&stats.count, committer.accepted());
                    stats.set_held(committer.held() as u64);
                }
            }
            give(&mut output, pulse.send_cap(0), out.drain(..).flat_map(|commit| multicast(&executors, commit)));
            if pulse.stopping() {
                pulse.release();
            }
            pulse.end(None);
        }
    });
    commits
}
