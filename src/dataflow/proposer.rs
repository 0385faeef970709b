//! The proposer operator: hosts the [`Proposer`] replicas of its worker.

use timely::dataflow::Stream;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::control::ReplicaStats;
use super::deployment::Deployment;
use super::placement::Stage;
use super::pulse::{Pulse, give};
use super::routed::{Local, Routed, by_worker, multicast};
use crate::protocol::{Nack, Propose, Proposer, Request, Stable};

/// Assigns sequence numbers to requests and multicasts each proposal to every committer;
/// repeats a proposal an executor nacks.
pub fn proposers<'s>(
    requests: Stream<'s, u64, Vec<Routed<Request>>>,
    stable: Stream<'s, u64, Vec<Routed<Stable>>>,
    nacks: Stream<'s, u64, Vec<Routed<Nack>>>,
    deployment: &Deployment,
) -> Stream<'s, u64, Vec<Routed<Propose>>> {
    let scope = requests.scope();
    let placement = deployment.placement.clone();
    let mut builder = OperatorBuilder::new("Proposer".to_owned(), scope);
    let info = builder.operator_info();
    let mut requests_in = builder.new_input(requests, by_worker());
    let mut stable_in = builder.new_input(stable, by_worker());
    let mut nacks_in = builder.new_input(nacks, by_worker());
    let (output, proposals) = builder.new_output();
    let mut output = OutputBuilder::from(output);

    let params = deployment.params.clone();
    let ids = placement.replicas_on(Stage::Proposer, scope.index());
    let make = move |id| Proposer::new(id, &params);
    let mut local = Local::new(Stage::Proposer, ids, make.clone());
    let (control, epoch_ms) = (deployment.control.clone(), deployment.epoch_ms);
    let activator = scope.activator_for(info.address.clone());
    let committers = placement.stage(Stage::Committer).to_vec();

    builder.build(move |caps| {
        let mut pulse = Pulse::new(caps, activator, control.clone(), epoch_ms, !local.is_empty());
        let mut out: Vec<Propose> = Vec::new();
        move |_frontiers| {
            let alive = pulse.begin();
            local.sync(&control, &make);
            stable_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver(routed.replica, |p| p.on_stable(routed.tuple, &mut out));
                }
            });
            nacks_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver(routed.replica, |p| p.on_nack(routed.tuple, &mut out));
                }
            });
            requests_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver_input(&control, routed.replica, |p| p.on_request(routed.tuple.clone(), &mut out));
                }
            });
            if !alive {
                return;
            }
            for (id, proposer) in local.iter_mut() {
                proposer.on_tick(pulse.now_us(), &mut out);
                if let Some(stats) = control.stats(Stage::Proposer, id) {
                    ReplicaStats::set(&stats.next, proposer.proposed());
                    ReplicaStats::set(&stats.count, proposer.proposed());
                    ReplicaStats::set(&stats.in_flight_max, proposer.in_flight_max());
                    stats.set_held(proposer.held() as u64);
                    ReplicaStats::set(&stats.stalls, proposer.stalls());
                    ReplicaStats::set(&stats.dropped, proposer.dropped());
                    ReplicaStats::set(&stats.stable, proposer.stable());
                    ReplicaStats::set(&stats.repairs, proposer.repeated());
                }
            }
            give(&mut output, pulse.send_cap(0), out.drain(..).flat_map(|propose| multicast(&committers, propose)));
            if pulse.stopping() {
                pulse.release();
            }
            pulse.end(None);
        }
    });
    proposals
}
