//! The request source operator: hosts the [`RequestSource`] replicas of its worker.

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::deployment::{Deployment, Submit};
use super::placement::Stage;
use super::pulse::{Pulse, give};
use super::routed::{Local, Routed, by_worker, multicast};
use crate::dataflow::control::ReplicaStats;
use crate::protocol::{Reply, Request, RequestSource, SourceOutbox, Target, View};
use crate::storage::DurableValue;

/// What the request source operator emits.
pub struct SourceStreams<'s> {
    /// Requests, to the proposer each names.
    pub requests: Stream<'s, u64, Vec<Routed<Request>>>,
    /// Progress reports, to every controller.
    pub targets: Stream<'s, u64, Vec<Routed<Target>>>,
}

/// Numbers and batches submitted commands into requests for the active proposer; follows the
/// replies to see every request answered, resending it otherwise.
pub fn request_sources<'s>(
    submissions: Stream<'s, u64, Vec<Submit>>,
    replies: Stream<'s, u64, Vec<Reply>>,
    views: Stream<'s, u64, Vec<Routed<View>>>,
    deployment: &Deployment,
) -> SourceStreams<'s> {
    let scope = submissions.scope();
    let placement = deployment.placement.clone();
    let route = placement.clone();
    let mut builder = OperatorBuilder::new("RequestSource".to_owned(), scope);
    let info = builder.operator_info();
    let by_source = Exchange::new(move |s: &Submit| route.worker_of(Stage::Source, s.source) as u64);
    let mut input = builder.new_input(submissions, by_source);
    let mut replies_in = builder.new_input(replies, Pipeline);
    let mut views_in = builder.new_input(views, by_worker());
    let (requests_out, requests) = builder.new_output();
    let (targets_out, targets) = builder.new_output();
    let (mut requests_out, mut targets_out) = (OutputBuilder::from(requests_out), OutputBuilder::from(targets_out));

    let params = deployment.params.clone();
    let ids = placement.replicas_on(Stage::Source, scope.index());
    let control = deployment.control.clone();
    let incarnations = control.clone();
    let state_dir = deployment.state_dir.clone();
    let make = move |id| {
        let generation = incarnations.stats(Stage::Source, id).map_or(0, |s| s.generation());
        RequestSource::new(id, &params).incarnation(next_incarnation(state_dir.as_deref(), id, generation))
    };
    let mut local = Local::new(Stage::Source, ids, make.clone());
    let epoch_ms = deployment.epoch_ms;
    let activator = scope.activator_for(info.address.clone());
    let controllers = placement.stage(Stage::Controller).to_vec();

    builder.build(move |caps| {
        let mut pulse = Pulse::new(caps, activator, control.clone(), epoch_ms, !local.is_empty());
        let mut out = SourceOutbox::default();
        move |_frontiers| {
            let alive = pulse.begin();
            local.sync(&control, &make);
            let now_us = pulse.now_us();
            views_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver(routed.replica, |s| s.on_view(routed.tuple, now_us, &mut out));
                }
            });
            replies_in.for_each(|_, data| {
                for reply in data.drain(..).filter(|_| alive) {
                    local.deliver(reply.source, |s| s.on_reply(&reply));
                }
            });
            input.for_each(|_, data| {
                for submit in data.drain(..).filter(|_| alive) {
                    local.deliver_input(&control, submit.source, |s| {
                        s.on_command(submit.command.clone(), now_us, &mut out)
                    });
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
                    ReplicaStats::set(&stats.repairs, source.resent());
                    stats.set_held(source.held() as u64);
                }
            }
            let route = |(proposer, request)| Routed::to(&placement, Stage::Proposer, proposer, request);
            give(&mut requests_out, pulse.send_cap(0), out.requests.drain(..).map(route));
            give(&mut targets_out, pulse.send_cap(1), out.targets.drain(..).flat_map(|t| multicast(&controllers, t)));
            if pulse.stopping() {
                pulse.release();
            }
            pulse.end(deadline);
        }
    });
    SourceStreams { requests, targets }
}

/// The earlier of two optional deadlines.
pub(crate) fn min_option(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The incarnation of source `id` starting now. Request numbers carry it (Section III-E: TARGET
/// and ACTUAL compare request numbers), so a source restarted with its whole process must not
/// number from 1 again: executors restored from a checkpoint remember the old numbers, and the
/// controllers would never see outstanding work. With a state directory the count of starts is
/// durable; without one, the in-memory restart generation counts injected restarts.
fn next_incarnation(state_dir: Option<&std::path::Path>, id: u32, generation: u64) -> u64 {
    let Some(root) = state_dir else { return generation };
    let dir = root.join(format!("source-{id}"));
    let counted = DurableValue::open(&dir, "incarnation").and_then(|file| {
        let next = file.read()?.map_or(1, |n| n + 1);
        file.write(next)?;
        Ok(next)
    });
    counted.unwrap_or_else(|e| {
        // Numbering from the generation alone could reuse numbers: refuse to guess.
        panic!("source {id}: cannot count its incarnations in {}: {e}", dir.display())
    })
}
