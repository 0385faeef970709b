//! The stage host: one timely operator, the same for every stage, that hosts the replicas of one
//! stage on one worker.
//!
//! Each activation it applies injected faults (a crashed replica loses its state; a restarted
//! one opens its durable state again and resumes from it), hands every arriving tuple to its
//! replica ([`Replica::on_tuple`]), ticks every replica, passes each outbox through the replica's
//! persist-then-release gate ([`Persist`]), addresses what comes out by the topology table, and
//! publishes the replicas' counters. A replica whose durable state fails stops, as a replica
//! with a failed disk would ([`Control::fail`]).

use std::sync::Arc;

use timely::communication::Pull;
use timely::dataflow::channels::Message;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{InputHandleCore, OutputBuilder};
use timely::dataflow::{Scope, Stream};

use super::control::{Control, ReplicaFailure, ReplicaStats};
use super::deployment::Deployment;
use super::pulse::{Out, Pulse};
use super::routed::{ALL_REPLICAS, Addresses, Routed, by_worker};
use crate::protocol::topology::{self, Kind, Tuple};
use crate::protocol::{Outbox, Replica, Reply, Stage, Submit};
use crate::storage::Persist;

/// A stream of tuples between stages.
pub type Tuples<'s> = Stream<'s, u64, Vec<Routed<Tuple>>>;

/// One input of a stage operator.
pub enum Input<'s> {
    /// Tuples of a kind, exchanged to the worker each is addressed to.
    Routed(Kind, Tuples<'s>),
    /// Client commands, exchanged to the worker of the request source each names.
    Commands(Stream<'s, u64, Vec<Submit>>),
    /// Replies, already at the worker of the request source each names.
    Replies(Stream<'s, u64, Vec<Reply>>),
}

/// An input handle that yields `(replica, tuple)` pairs, whatever it carries.
trait Port {
    fn drain(&mut self, deliver: &mut dyn FnMut(u32, Tuple));
}

impl<P: Pull<Message<u64, Vec<Routed<Tuple>>>>> Port for InputHandleCore<u64, Vec<Routed<Tuple>>, P> {
    fn drain(&mut self, deliver: &mut dyn FnMut(u32, Tuple)) {
        self.for_each(|_, data| data.drain(..).for_each(|routed| deliver(routed.replica, routed.tuple)));
    }
}

impl<P: Pull<Message<u64, Vec<Submit>>>> Port for InputHandleCore<u64, Vec<Submit>, P> {
    fn drain(&mut self, deliver: &mut dyn FnMut(u32, Tuple)) {
        self.for_each(|_, data| data.drain(..).for_each(|submit| deliver(submit.source, Tuple::Command(submit))));
    }
}

impl<P: Pull<Message<u64, Vec<Reply>>>> Port for InputHandleCore<u64, Vec<Reply>, P> {
    fn drain(&mut self, deliver: &mut dyn FnMut(u32, Tuple)) {
        self.for_each(|_, data| data.drain(..).for_each(|reply| deliver(reply.source, Tuple::Reply(reply))));
    }
}

/// An input port, whether fault injection can make replicas lose it, and whether what arrives
/// on it is new client work (commands, requests, proposals; not repeats or reports), which
/// keeps the process's epoch short ([`Control::note_activity`]).
struct In {
    port: Box<dyn Port>,
    request_path: bool,
    client_work: bool,
}

/// One hosted replica: its state (`None` while crashed), its gate, its outbox, its counters.
struct Slot<S> {
    id: u32,
    stats: Arc<ReplicaStats>,
    replica: Option<S>,
    persist: Option<Persist>,
    out: Outbox,
    generation: Option<u64>,
}

/// The replicas of one stage on one worker.
struct Replicas<S, M> {
    stage: Stage,
    slots: Vec<Slot<S>>,
    make: M,
    deployment: Deployment,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl<S: Replica, M: FnMut(u32) -> S> Replicas<S, M> {
    fn new(stage: Stage, ids: &[u32], make: M, deployment: &Deployment, wake: Arc<dyn Fn() + Send + Sync>) -> Self {
        let slot = |id: &u32| {
            let stats = deployment.control.stats(stage, *id).cloned().unwrap_or_default();
            Slot { id: *id, stats, replica: None, persist: None, out: Outbox::default(), generation: None }
        };
        Replicas { stage, slots: ids.iter().map(slot).collect(), make, deployment: deployment.clone(), wake }
    }

    /// Applies injected crashes and restarts; a restart resumes from durable state.
    fn sync(&mut self, control: &Control) {
        for index in 0..self.slots.len() {
            let stats = self.slots[index].stats.clone();
            if stats.is_down() {
                self.stop(index);
            } else if self.slots[index].generation != Some(stats.generation()) {
                self.slots[index].generation = Some(stats.generation());
                self.stop(index);
                self.start(index, control);
            }
        }
    }

    fn stop(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.replica = None;
        slot.out = Outbox::default();
        // A failure was reported when it happened; finishing waits for the queued writes.
        drop(slot.persist.take().map(Persist::finish));
        slot.stats.halted.store(slot.stats.is_down(), std::sync::atomic::Ordering::Release);
    }

    fn start(&mut self, index: usize, control: &Control) {
        let (stage, id) = (self.stage, self.slots[index].id);
        let opened = match self.deployment.storage.open(stage, id, self.deployment.durable_records) {
            Ok(opened) => opened,
            Err(error) => return control.fail(ReplicaFailure { stage, replica: id, at_start: true, error }),
        };
        opened.notes.iter().for_each(|note| tracing::warn!("{} {id}: {note}", stage.replica_name()));
        let mut replica = (self.make)(id);
        if let Err(e) = replica.resume(opened.recovered) {
            tracing::warn!("{} {id}: starts empty: {e}", stage.replica_name());
        }
        let wake = self.wake.clone();
        match self.deployment.storage.gate(opened.store, id, Box::new(move || wake())) {
            Ok(persist) => (self.slots[index].replica, self.slots[index].persist) = (Some(replica), Some(persist)),
            Err(e) => tracing::error!("{} {id}: cannot start its writer thread: {e}", stage.replica_name()),
        }
    }

    /// Hands `tuple` to the addressed live replica, or to every live local one (cloned only
    /// when several take it).
    fn deliver(&mut self, replica: u32, tuple: Tuple, now_us: u64, request_path: bool) {
        let listens = |slot: &Slot<S>| slot.replica.is_some() && !(request_path && slot.stats.is_deaf());
        if replica != ALL_REPLICAS {
            // Most tuples name one replica (every reply, command and request does): one look,
            // no count and no clone, which the reply path pays three times per command.
            let Some(slot) = self.slots.iter_mut().find(|s| s.id == replica) else { return };
            if listens(slot)
                && let Some(state) = slot.replica.as_mut()
            {
                state.on_tuple(tuple, now_us, &mut slot.out);
            }
            return;
        }
        let mut left = self.slots.iter().filter(|s| listens(s)).count();
        let mut tuple = Some(tuple);
        for slot in self.slots.iter_mut().filter(|s| listens(s)) {
            left -= 1;
            let copy = if left == 0 { tuple.take() } else { tuple.clone() };
            if let (Some(copy), Some(state)) = (copy, slot.replica.as_mut()) {
                state.on_tuple(copy, now_us, &mut slot.out);
            }
        }
    }

    /// Ticks every live replica and sends what its gate releases; publishes its counters.
    fn tick(&mut self, control: &Control, now_us: u64, stopping: bool, send: &mut impl FnMut(Tuple)) {
        for slot in self.slots.iter_mut() {
            let (Some(replica), Some(persist)) = (slot.replica.as_mut(), slot.persist.as_mut()) else { continue };
            replica.on_tick(now_us, &mut slot.out);
            if let Err(error) = persist.send(&mut slot.out, send) {
                slot.replica = None;
                control.fail(ReplicaFailure { stage: self.stage, replica: slot.id, at_start: false, error });
                continue;
            }
            slot.stats.publish(&replica.counters());
            if stopping {
                ReplicaStats::set(&slot.stats.state_digest, replica.state_digest());
            }
        }
    }

    fn deadline_us(&self) -> Option<u64> {
        self.slots.iter().filter_map(|s| s.replica.as_ref()?.deadline_us()).min()
    }
}

/// A stage operator's outputs: one port per kind it emits, each buffering what an activation
/// sends, addressed by the topology.
struct Outputs {
    kinds: Vec<Kind>,
    ports: Vec<Out<Routed<Tuple>>>,
    buffers: Vec<Vec<Routed<Tuple>>>,
    addresses: Addresses,
}

impl Outputs {
    fn new<'s>(
        builder: &mut OperatorBuilder<'s, u64>,
        stage: Stage,
        deployment: &Deployment,
        worker: usize,
    ) -> (Outputs, Vec<(Kind, Tuples<'s>)>) {
        let kinds = Addresses::outputs(stage);
        let (ports, streams) = kinds
            .iter()
            .map(|kind| {
                let (output, stream) = builder.new_output();
                (OutputBuilder::from(output), (*kind, stream))
            })
            .unzip();
        let addresses = Addresses::new(&deployment.params, &deployment.placement, worker);
        let buffers = kinds.iter().map(|_| Vec::new()).collect();
        (Outputs { kinds, ports, buffers, addresses }, streams)
    }

    fn push(&mut self, tuple: Tuple) {
        let port = self.kinds.iter().position(|k| *k == tuple.kind()).expect("the topology lists every output");
        let buffer = &mut self.buffers[port];
        self.addresses.address(tuple, |routed| buffer.push(routed));
    }

    /// Sends each buffer as one container (no copy per tuple); true if anything went out.
    fn give(&mut self, pulse: &Pulse) -> bool {
        let mut sent = false;
        for (index, (port, buffer)) in self.ports.iter_mut().zip(self.buffers.iter_mut()).enumerate() {
            if let (false, Some(cap)) = (buffer.is_empty(), pulse.send_cap(index)) {
                port.activate().session(&cap).give_container(buffer);
                sent = true;
            }
            // What timely did not take (nothing, normally) must not go out twice.
            buffer.clear();
        }
        sent
    }
}

/// One input port of the operator.
fn port<'s>(builder: &mut OperatorBuilder<'s, u64>, input: Input<'s>, deployment: &Deployment) -> In {
    match input {
        Input::Routed(kind, stream) => In {
            port: Box::new(builder.new_input(stream, by_worker())),
            request_path: topology::route(kind).request_path,
            client_work: matches!(kind, Kind::Request | Kind::Propose),
        },
        Input::Commands(stream) => {
            let placement = deployment.placement.clone();
            let pact = Exchange::new(move |s: &Submit| placement.worker_of(Stage::Source, s.source) as u64);
            In { port: Box::new(builder.new_input(stream, pact)), request_path: true, client_work: true }
        }
        Input::Replies(stream) => {
            In { port: Box::new(builder.new_input(stream, Pipeline)), request_path: false, client_work: false }
        }
    }
}

/// Everything one stage operator owns on one worker.
struct Host<S, M> {
    ports: Vec<In>,
    outputs: Outputs,
    replicas: Replicas<S, M>,
    control: Arc<Control>,
}

impl<S: Replica, M: FnMut(u32) -> S> Host<S, M> {
    /// One activation: faults, inputs, ticks and the gates, outputs.
    fn activate(&mut self, pulse: &mut Pulse) {
        let alive = pulse.begin();
        self.replicas.sync(&self.control);
        let now_us = pulse.now_us();
        let (replicas, control) = (&mut self.replicas, &self.control);
        for input in self.ports.iter_mut() {
            let (request_path, client_work) = (input.request_path, input.client_work);
            input.port.drain(&mut |replica, tuple| {
                if client_work {
                    control.note_activity(now_us);
                }
                if alive {
                    replicas.deliver(replica, tuple, now_us, request_path);
                }
            });
        }
        if !alive {
            return;
        }
        let stopping = pulse.stopping();
        let outputs = &mut self.outputs;
        replicas.tick(control, now_us, stopping, &mut |tuple| outputs.push(tuple));
        let sent = outputs.give(pulse);
        if stopping {
            pulse.release();
        }
        pulse.end(replicas.deadline_us(), sent);
    }
}

/// Builds the operator that hosts `stage`'s replicas on this worker: `inputs` in the order of
/// the topology's routes into the stage; one output per route out of it, in table order.
/// `make` builds a replica before it resumes from durable state.
pub fn host<'s, S: Replica + 'static>(
    stage: Stage,
    scope: Scope<'s, u64>,
    inputs: Vec<Input<'s>>,
    deployment: &Deployment,
    make: impl FnMut(u32) -> S + 'static,
) -> Vec<(Kind, Tuples<'s>)> {
    let mut builder = OperatorBuilder::new(stage.operator().to_owned(), scope);
    let info = builder.operator_info();
    let ports = inputs.into_iter().map(|input| port(&mut builder, input, deployment)).collect();
    let (outputs, streams) = Outputs::new(&mut builder, stage, deployment, scope.index());
    let sync = scope.worker().sync_activator_for(info.address.to_vec());
    let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        let _ = sync.activate();
    });
    let ids = deployment.placement.replicas_on(stage, scope.index());
    let replicas = Replicas::new(stage, &ids, make, deployment, wake);
    let mut host = Host { ports, outputs, replicas, control: deployment.control.clone() };
    let (control, epoch_ms) = (deployment.control.clone(), deployment.epoch_ms);
    let activator = scope.activator_for(info.address.clone());
    builder.build(move |caps| {
        let mut pulse = Pulse::new(caps, activator, control, epoch_ms, !ids.is_empty());
        move |_frontiers| host.activate(&mut pulse)
    });
    streams
}
