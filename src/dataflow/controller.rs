//! The controller operator: hosts the [`Controller`] replicas of its worker.

use timely::dataflow::Stream;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::control::ReplicaStats;
use super::deployment::Deployment;
use super::placement::Stage;
use super::pulse::{Pulse, give};
use super::routed::{ALL_REPLICAS, Local, Routed, by_worker};
use crate::protocol::{Actual, Controller, Target, View};

/// Watches the sources' targets and the executors' progress; announces views to every worker
/// that hosts a source, proposer, committer, executor or controller (the caller closes the
/// view loop).
pub fn controllers<'s>(
    targets: Stream<'s, u64, Vec<Routed<Target>>>,
    actuals: Stream<'s, u64, Vec<Routed<Actual>>>,
    views: Stream<'s, u64, Vec<Routed<View>>>,
    deployment: &Deployment,
) -> Stream<'s, u64, Vec<Routed<View>>> {
    let scope = targets.scope();
    let placement = deployment.placement.clone();
    let mut builder = OperatorBuilder::new("Controller".to_owned(), scope);
    let info = builder.operator_info();
    let mut targets_in = builder.new_input(targets, by_worker());
    let mut actuals_in = builder.new_input(actuals, by_worker());
    let mut views_in = builder.new_input(views, by_worker());
    let (output, announcements) = builder.new_output();
    let mut output = OutputBuilder::from(output);

    let params = deployment.params.clone();
    let ids = placement.replicas_on(Stage::Controller, scope.index());
    let make = move |id| Controller::new(id, &params);
    let mut local = Local::new(Stage::Controller, ids, make.clone());
    let (control, epoch_ms) = (deployment.control.clone(), deployment.epoch_ms);
    let activator = scope.activator_for(info.address.clone());
    let receivers = placement.workers_hosting(&Stage::ALL);

    builder.build(move |caps| {
        let mut pulse = Pulse::new(caps, activator, control.clone(), epoch_ms, !local.is_empty());
        let mut out: Vec<View> = Vec::new();
        move |_frontiers| {
            let alive = pulse.begin();
            local.sync(&control, &make);
            let now_us = pulse.now_us();
            views_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver(routed.replica, |x| x.on_view(routed.tuple, now_us));
                }
            });
            targets_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver(routed.replica, |x| x.on_target(routed.tuple, now_us));
                }
            });
            actuals_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver(routed.replica, |x| x.on_actual(routed.tuple.clone(), now_us));
                }
            });
            if !alive {
                return;
            }
            for (id, controller) in local.iter_mut() {
                controller.on_tick(now_us, &mut out);
                if let Some(stats) = control.stats(Stage::Controller, id) {
                    ReplicaStats::set(&stats.view, controller.view());
                    ReplicaStats::set(&stats.count, controller.changes());
                }
            }
            let to_workers =
                |view| receivers.iter().map(move |w| Routed { worker: *w, replica: ALL_REPLICAS, tuple: view });
            give(&mut output, pulse.send_cap(0), out.drain(..).flat_map(to_workers));
            if pulse.stopping() {
                pulse.release();
            }
            pulse.end(None);
        }
    });
    announcements
}
