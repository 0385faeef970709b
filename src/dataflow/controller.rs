//! The controller operator: hosts the [`Controller`] replicas of its worker.

use std::collections::BTreeMap;

use timely::dataflow::Stream;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::control::ReplicaStats;
use super::deployment::Deployment;
use super::placement::Stage;
use super::pulse::{Pulse, give};
use super::routed::{ALL_REPLICAS, Local, Routed, by_worker};
use crate::protocol::{Actual, Controller, Target, View};
use crate::storage::DurableValue;

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
    let mut durable = DurableViews::open(deployment, &ids);
    let files = durable.files.clone();
    // A replica (re)starts from its durable view: at process start and after an injected restart.
    let make = move |id| {
        let mut controller = Controller::new(id, &params);
        if let Some(view) = files.get(&id).and_then(|file: &DurableValue| file.read().ok().flatten()) {
            tracing::info!("controller {id}: resumes from view {view}");
            controller.resume(view);
        }
        controller
    };
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
                durable.persist(id, controller.known_view());
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

/// The highest view each local controller knew, on disk under the state directory: a cluster
/// restarted as a whole (`tara cluster` after a process died) resumes from it instead of
/// climbing again from view 0, one view timeout per view. Without a state directory, views live
/// in memory only and restarted controllers learn them from their peers.
struct DurableViews {
    files: BTreeMap<u32, DurableValue>,
    written: BTreeMap<u32, u64>,
}

impl DurableViews {
    fn open(deployment: &Deployment, ids: &[u32]) -> DurableViews {
        let mut files = BTreeMap::new();
        for (id, root) in ids.iter().flat_map(|id| deployment.state_dir.iter().map(move |root| (*id, root))) {
            let dir = root.join(format!("controller-{id}"));
            match DurableValue::open(&dir, "view") {
                Ok(file) => drop(files.insert(id, file)),
                Err(e) => tracing::error!("controller {id}: cannot use {}: {e}", dir.display()),
            }
        }
        DurableViews { files, written: BTreeMap::new() }
    }

    /// Writes `view` if it is higher than what this incarnation wrote (views change rarely).
    fn persist(&mut self, id: u32, view: u64) {
        if view == 0 || self.written.get(&id).is_some_and(|w| *w >= view) {
            return;
        }
        if let Some(file) = self.files.get(&id)
            && let Err(e) = file.write(view)
        {
            tracing::error!("controller {id}: cannot record view {view}: {e}");
        }
        self.written.insert(id, view);
    }
}
