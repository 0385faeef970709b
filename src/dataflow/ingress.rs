//! Ingress: client commands from other threads into the running dataflow (channel + activator),
//! for a request source on this worker or, forwarded, for one anywhere.

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

/// One input queue: a request source's, or a forwarding worker's.
struct Queue {
    sender: Sender<Submit>,
    receiver: Mutex<Option<Receiver<Submit>>>,
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
    /// The worker takes no forwarded commands.
    NotForwarding(u32),
    /// The dataflow has stopped.
    Stopped,
}

impl std::fmt::Display for IngressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngressError::NoSuchSource(s) => write!(f, "request source {s} does not exist"),
            IngressError::NotForwarding(w) => write!(f, "worker {w} forwards no commands"),
            IngressError::Stopped => f.write_str("the cluster has stopped"),
        }
    }
}

impl std::error::Error for IngressError {}

/// The input queues of every request source, and of the workers that forward commands to
/// request sources elsewhere, shared by the clients of a process.
pub struct Ingress {
    /// One queue per request source, then one per forwarding worker.
    queues: Vec<Queue>,
    sources: usize,
    forwarders: Vec<u32>,
}

impl Ingress {
    /// Queues for `sources` request sources.
    pub fn new(sources: usize) -> Arc<Ingress> {
        Self::forwarding(sources, &[])
    }

    /// Queues for `sources` request sources, and for forwarding through the ingress operators
    /// of `workers` (the front end of a process forwards through one of its own workers).
    pub fn forwarding(sources: usize, workers: &[u32]) -> Arc<Ingress> {
        let queue = |_| {
            let (sender, receiver) = crossbeam_channel::unbounded();
            let receiver = Mutex::new(Some(receiver));
            Queue { sender, receiver, activator: OnceLock::new(), pending: AtomicBool::new(false) }
        };
        let queues = (0..sources + workers.len()).map(queue).collect();
        Arc::new(Ingress { queues, sources, forwarders: workers.to_vec() })
    }

    /// Request sources served.
    pub fn sources(&self) -> usize {
        self.sources
    }

    /// Puts `command` into the input queue of request source `source` and wakes its worker.
    pub fn submit(&self, source: u32, command: Command) -> Result<(), IngressError> {
        self.submit_quietly(source, command)?;
        self.wake_queued()
    }

    /// Puts `command` into the input queue of request source `source` without waking its
    /// worker: the commands queued so go into the dataflow together, at the next
    /// [`Ingress::wake_queued`] (or at the latest at the operator's idle tick: a command whose
    /// wake-up is missing is late, never lost). Clients that submit many commands at once queue
    /// them quietly and wake once, which lets the source batch them.
    pub fn submit_quietly(&self, source: u32, command: Command) -> Result<(), IngressError> {
        if source as usize >= self.sources {
            return Err(IngressError::NoSuchSource(source));
        }
        self.queues[source as usize].sender.send(Submit { source, command }).map_err(|_| IngressError::Stopped)
    }

    /// Has worker `worker`'s ingress operator send `command` into the dataflow for request
    /// source `source`, wherever it runs; replies also come back to `worker`. Queued quietly,
    /// like [`Ingress::submit_quietly`].
    pub fn forward(&self, worker: u32, source: u32, mut command: Command) -> Result<(), IngressError> {
        if source as usize >= self.sources {
            return Err(IngressError::NoSuchSource(source));
        }
        let at = self.forwarders.iter().position(|w| *w == worker).ok_or(IngressError::NotForwarding(worker))?;
        command.origin = Some(worker);
        self.queues[self.sources + at].sender.send(Submit { source, command }).map_err(|_| IngressError::Stopped)
    }

    /// Wakes the operator of every queue that holds commands, unless an activation is owed.
    pub fn wake_queued(&self) -> Result<(), IngressError> {
        for queue in self.queues.iter().filter(|queue| !queue.sender.is_empty()) {
            if !queue.pending.swap(true, Ordering::AcqRel)
                && let Some(activator) = queue.activator.get()
            {
                activator.activate().map_err(|_| IngressError::Stopped)?;
            }
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
    let mut local: Vec<(usize, Receiver<Submit>)> = Vec::new();
    let sources = deployment.placement.replicas_on(Stage::Source, scope.index()).into_iter().map(|s| s as usize);
    let forwarding = queues.forwarders.iter().position(|w| *w as usize == scope.index()).map(|at| queues.sources + at);
    for index in sources.filter(|s| *s < queues.sources).chain(forwarding) {
        let queue = &queues.queues[index];
        let receiver = queue.receiver.lock().ok().and_then(|mut r| r.take());
        if let Some(receiver) = receiver {
            let _ = queue.activator.set(scope.worker().sync_activator_for(info.address.to_vec()));
            local.push((index, receiver));
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
            for (index, receiver) in local.iter() {
                queues.queues[*index].pending.store(false, Ordering::Release);
                busy |= give(&mut output, pulse.send_cap(0), receiver.try_iter());
            }
            if pulse.stopping() {
                pulse.release();
            }
            pulse.end(None, busy);
        }
    });
    submissions
}
