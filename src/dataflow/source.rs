//! The request source operator: hosts the [`RequestSource`] replicas of its worker.

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::deployment::{Deployment, Submit};
use super::placement::Stage;
use super::pulse::{Pulse, give};
use super::routed::{Local, Routed};
use crate::dataflow::control::ReplicaStats;
use crate::protocol::{Request, RequestSource};

/// Numbers and batches submitted commands into requests for the active proposer.
pub fn request_sources<'s>(
    submissions: Stream<'s, u64, Vec<Submit>>,
    deployment: &Deployment,
) -> Stream<'s, u64, Vec<Routed<Request>>> {
    let scope = submissions.scope();
    let placement = deployment.placement.clone();
    let route = placement.clone();
    let mut builder = OperatorBuilder::new("RequestSource".to_owned(), scope);
    let info = builder.operator_info();
    let mut input = builder
        .new_input(submissions, Exchange::new(move |s: &Submit| route.worker_of(Stage::Source, s.source) as u64));
    let (output, requests) = builder.new_output();
    let mut output = OutputBuilder::from(output);

    let params = deployment.params.clone();
    let ids = placement.replicas_on(Stage::Source, scope.index());
    let make = move |id| RequestSource::new(id, &params);
    let mut local = Local::new(Stage::Source, ids, make.clone());
    let (control, epoch_ms) = (deployment.control.clone(), deployment.epoch_ms);
    let activator = scope.activator_for(info.address.clone());

    builder.build(move |caps| {
        let mut pulse = Pulse::new(caps, activator, control.clone(), epoch_ms, !local.is_empty());
        let mut out: Vec<(u32, Request)> = Vec::new();
        move |_frontiers| {
            let alive = pulse.begin();
            local.sync(&control, &make);
            let now_us = pulse.now_us();
            input.for_each(|_, data| {
                for submit in data.drain(..) {
                    if alive {
                        local.deliver_input(&control, submit.source, |s| {
                            s.on_command(submit.command.clone(), now_us, &mut out)
                        });
                    }
                }
            });
            if !alive {
                return;
            }
            let mut deadline = None;
            for (id, source) in local.iter_mut() {
                source.on_tick(now_us, &mut out);
                deadline = min_option(deadline, source.next_deadline_us());
                if let Some(stats) = control.stats(Stage::Source, id) {
                    ReplicaStats::set(&stats.next, source.highest_number() + 1);
                    stats.set_held(source.held() as u64);
                }
            }
            let route = |(proposer, request)| Routed::to(&placement, Stage::Proposer, proposer, request);
            give(&mut output, pulse.send_cap(0), out.drain(..).map(route));
            if pulse.stopping() {
                pulse.release();
            }
            pulse.end(deadline);
        }
    });
    requests
}

/// The earlier of two optional deadlines.
pub(crate) fn min_option(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
