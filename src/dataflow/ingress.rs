//! Ingress: client commands from other threads into the running dataflow (channel + activator).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crossbeam_channel::{Receiver, Sender};
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};
use timely::scheduling::SyncActivator;

use super::deployment::{Deployment, Submit};
use super::placement::Stage;
use super::pulse::{Pulse, give};
use crate::protocol::Command;

/// One request source's input queue.
struct Queue {
    sender: Sender<Command>,
    receiver: Mutex<Option<Receiver<Command>>>,
    activator: OnceLock<SyncActivator>,
    /// Set by a submitter that owes the operator an activation; cleared by the operator before
    /// it drains, so a command sent after the drain always triggers a new activation.
    pending: AtomicBool,
}

/// Why a command could not be submitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngressError {
    /// The request source index does not exist.
    NoSuchSource(u32),
    /// The dataflow has stopped.
    Stopped,
}

impl std::fmt::Display for IngressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngressError::NoSuchSource(s) => write!(f, "request source {s} does not exist"),
            IngressError::Stopped => f.write_str("the cluster has stopped"),
        }
    }
}

impl std::error::Error for IngressError {}

/// The input queues of every request source, shared by the clients of a process.
pub struct Ingress {
    queues: Vec<Queue>,
}

impl Ingress {
    /// Queues for `sources` request sources.
    pub fn new(sources: usize) -> Arc<Ingress> {
        let queues = (0..sources)
            .map(|_| {
                let (sender, receiver) = crossbeam_channel::unbounded();
                let receiver = Mutex::new(Some(receiver));
                Queue { sender, receiver, activator: OnceLock::new(), pending: AtomicBool::new(false) }
            })
            .collect();
        Arc::new(Ingress { queues })
    }

    /// Request sources served.
    pub fn sources(&self) -> usize {
        self.queues.len()
    }

    /// Puts `command` into the input queue of request source `source` and wakes its worker.
    pub fn submit(&self, source: u32, command: Command) -> Result<(), IngressError> {
        let queue = self.queues.get(source as usize).ok_or(IngressError::NoSuchSource(source))?;
        queue.sender.send(command).map_err(|_| IngressError::Stopped)?;
        if !queue.pending.swap(true, Ordering::AcqRel)
            && let Some(activator) = queue.activator.get()
        {
            activator.activate().map_err(|_| IngressError::Stopped)?;
        }
        Ok(())
    }
}

/// A source operator that drains the input queues of the request sources this worker hosts.
pub fn ingress<'s>(
    scope: Scope<'s, u64>,
    queues: &Arc<Ingress>,
    deployment: &Deployment,
) -> Stream<'s, u64, Vec<Submit>> {
    let mut builder = OperatorBuilder::new("Ingress".to_owned(), scope);
    let info = builder.operator_info();
    let (output, submissions) = builder.new_output();
    let mut output = OutputBuilder::from(output);

    let queues = queues.clone();
    let mut local: Vec<(u32, Receiver<Command>)> = Vec::new();
    for source in deployment.placement.replicas_on(Stage::Source, scope.index()) {
        let Some(queue) = queues.queues.get(source as usize) else { continue };
        let receiver = queue.receiver.lock().ok().and_then(|mut r| r.take());
        if let Some(receiver) = receiver {
            let _ = queue.activator.set(scope.worker().sync_activator_for(info.address.to_vec()));
            local.push((source, receiver));
        }
    }
    let (control, epoch_ms) = (deployment.control.clone(), deployment.epoch_ms);
    let activator = scope.activator_for(info.address.clone());

    builder.build(move |caps| {
        let mut pulse = Pulse::new(caps, activator, control, epoch_ms, !local.is_empty());
        move |_frontiers| {
            if !pulse.begin() {
                return;
            }
            let mut busy = false;
            for (source, receiver) in local.iter() {
                queues.queues[*source as usize].pending.store(false, Ordering::Release);
                let drained = receiver.try_iter().map(|command| Submit { source: *source, command });
                busy |= give(&mut output, pulse.send_cap(0), drained);
            }
            if busy {
                pulse.note_activity();
            }
            if pulse.stopping() {
                pulse.release();
            }
            pulse.end(None, busy);
        }
    });
    submissions
}
