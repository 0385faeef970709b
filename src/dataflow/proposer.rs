//! The proposer operator: hosts the [`Proposer`] replicas of its worker.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use timely::dataflow::Stream;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::control::ReplicaStats;
use super::deployment::Deployment;
use super::placement::Stage;
use super::pulse::{Pulse, give};
use super::routed::{Local, Routed, by_worker, multicast};
use crate::protocol::{Nack, Propose, Proposer, Record, Request, Stable, View};
use crate::storage::DurableValue;

/// The inputs of the proposer operator.
pub struct ProposerInputs<'s> {
    /// Requests from the sources.
    pub requests: Stream<'s, u64, Vec<Routed<Request>>>,
    /// Stability thresholds (garbage-collection loop).
    pub stable: Stream<'s, u64, Vec<Routed<Stable>>>,
    /// Nacks from executors (repair loop).
    pub nacks: Stream<'s, u64, Vec<Routed<Nack>>>,
    /// Views from the controllers (view loop).
    pub views: Stream<'s, u64, Vec<Routed<View>>>,
    /// Records from the committers (record loop).
    pub records: Stream<'s, u64, Vec<Routed<Record>>>,
}

/// Assigns sequence numbers to requests and multicasts each proposal to every committer;
/// repeats proposals that executors nack or that stall; takes over after a view change.
pub fn proposers<'s>(inputs: ProposerInputs<'s>, deployment: &Deployment) -> Stream<'s, u64, Vec<Routed<Propose>>> {
    let scope = inputs.requests.scope();
    let placement = deployment.placement.clone();
    let mut builder = OperatorBuilder::new("Proposer".to_owned(), scope);
    let info = builder.operator_info();
    let mut requests_in = builder.new_input(inputs.requests, by_worker());
    let mut stable_in = builder.new_input(inputs.stable, by_worker());
    let mut nacks_in = builder.new_input(inputs.nacks, by_worker());
    let mut views_in = builder.new_input(inputs.views, by_worker());
    let mut records_in = builder.new_input(inputs.records, by_worker());
    let (output, proposals) = builder.new_output();
    let mut output = OutputBuilder::from(output);

    let params = deployment.params.clone();
    let ids = placement.replicas_on(Stage::Proposer, scope.index());
    let led = Rc::new(RefCell::new(LedViews::open(deployment, &ids)));
    let (generations, remembered) = (deployment.control.clone(), led.clone());
    let make = move |id| {
        let restarted = generations.stats(Stage::Proposer, id).is_some_and(|s| s.generation() > 0);
        match remembered.borrow().get(id) {
            None if !restarted => Proposer::new(id, &params),
            led => Proposer::restarted(id, &params, led),
        }
    };
    let mut local = Local::new(Stage::Proposer, ids, &make);
    let (control, epoch_ms) = (deployment.control.clone(), deployment.epoch_ms);
    let activator = scope.activator_for(info.address.clone());
    let committers = placement.stage(Stage::Committer).to_vec();

    builder.build(move |caps| {
        let mut pulse = Pulse::new(caps, activator, control.clone(), epoch_ms, !local.is_empty());
        let mut out: Vec<Propose> = Vec::new();
        move |_frontiers| {
            let alive = pulse.begin();
            local.sync(&control, &make);
            views_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver(routed.replica, |p| p.on_view(routed.tuple));
                }
            });
            stable_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver(routed.replica, |p| p.on_stable(routed.tuple, &mut out));
                }
            });
            records_in.for_each(|_, data| {
                for routed in data.drain(..).filter(|_| alive) {
                    local.deliver(routed.replica, |p| p.on_record(routed.tuple.clone(), &mut out));
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
            let mut durable = true;
            for (id, proposer) in local.iter_mut() {
                proposer.on_tick(pulse.now_us(), &mut out);
                durable &= led.borrow_mut().persist(id, proposer.led());
                if let Some(stats) = control.stats(Stage::Proposer, id) {
                    ReplicaStats::set(&stats.next, proposer.proposed());
                    ReplicaStats::set(&stats.count, proposer.proposed());
                    ReplicaStats::set(&stats.view, proposer.view());
                    ReplicaStats::set(&stats.in_flight_max, proposer.in_flight_max());
                    stats.set_held(proposer.held() as u64);
                    ReplicaStats::set(&stats.stalls, proposer.stalls());
                    ReplicaStats::set(&stats.dropped, proposer.dropped());
                    ReplicaStats::set(&stats.stable, proposer.stable());
                    ReplicaStats::set(&stats.repairs, proposer.repeated());
                }
            }
            // Nothing goes out in a view whose leadership is not on disk (host duty).
            let proposals = out.drain(..).filter(|_| durable);
            give(&mut output, pulse.send_cap(0), proposals.flat_map(|propose| multicast(&committers, propose)));
            if pulse.stopping() {
                pulse.release();
            }
            pulse.end(None);
        }
    });
    proposals
}

/// The highest view each local proposer led: on disk under the state directory (so that it
/// survives a process restart), and in memory (so that it survives an injected crash without a
/// state directory).
struct LedViews {
    files: BTreeMap<u32, DurableValue>,
    known: BTreeMap<u32, u64>,
}

impl LedViews {
    fn open(deployment: &Deployment, ids: &[u32]) -> LedViews {
        let mut led = LedViews { files: BTreeMap::new(), known: BTreeMap::new() };
        let Some(root) = deployment.state_dir.as_ref() else { return led };
        for id in ids {
            let dir = root.join(format!("proposer-{id}"));
            match DurableValue::open(&dir, "led-view").and_then(|file| Ok((file.read()?, file))) {
                Ok((value, file)) => {
                    led.files.insert(*id, file);
                    if let Some(view) = value {
                        led.known.insert(*id, view);
                    }
                }
                Err(e) => tracing::error!("proposer {id}: cannot use {}: {e}", dir.display()),
            }
        }
        led
    }

    fn get(&self, id: u32) -> Option<u64> {
        self.known.get(&id).copied()
    }

    /// Makes `led` durable if it changed; false if it could not be written.
    fn persist(&mut self, id: u32, led: Option<u64>) -> bool {
        let Some(view) = led.filter(|v| self.known.get(&id) != Some(v)) else { return true };
        if let Some(file) = self.files.get(&id)
            && let Err(e) = file.write(view)
        {
            tracing::error!("proposer {id}: cannot record that it leads view {view}: {e}");
            return false;
        }
        tracing::info!("proposer {id}: leads view {view}");
        self.known.insert(id, view);
        true
    }
}
