//! Tuples addressed to a replica, and the exchange pact that delivers them.

use serde::{Deserialize, Serialize};
use timely::ExchangeData;
use timely::dataflow::channels::pact::Exchange;

use super::placement::{Placement, Stage};

/// The replica index that addresses every replica of the receiving stage on the worker.
pub const ALL_REPLICAS: u32 = u32::MAX;

/// A tuple on its way to replica `replica` of the next stage, which worker `worker` hosts.
/// Multicast is one copy per destination.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Routed<T> {
    /// The destination worker.
    pub worker: u32,
    /// The destination replica of the receiving stage, or [`ALL_REPLICAS`].
    pub replica: u32,
    /// The tuple.
    pub tuple: T,
}

impl<T> Routed<T> {
    /// `tuple`, addressed to `replica` of `stage`.
    pub fn to(placement: &Placement, stage: Stage, replica: u32, tuple: T) -> Routed<T> {
        Routed { worker: placement.worker_of(stage, replica), replica, tuple }
    }
}

/// The pact that delivers every routed tuple to its destination worker.
pub fn by_worker<T: ExchangeData>() -> Exchange<Routed<T>, impl FnMut(&Routed<T>) -> u64 + 'static> {
    Exchange::new(|routed: &Routed<T>| routed.worker as u64)
}

/// One copy of `tuple` for every replica of a stage, given the workers of its replicas.
pub fn multicast<'a, T: Clone + 'a>(workers: &'a [u32], tuple: T) -> impl Iterator<Item = Routed<T>> + 'a {
    workers.iter().enumerate().map(move |(replica, worker)| Routed {
        worker: *worker,
        replica: replica as u32,
        tuple: tuple.clone(),
    })
}

/// The replicas a stage hosts on one worker, with their indices.
pub struct Local<S> {
    replicas: Vec<(u32, S)>,
}

impl<S> Local<S> {
    /// Wraps the replicas this worker hosts.
    pub fn new(replicas: Vec<(u32, S)>) -> Local<S> {
        Local { replicas }
    }

    /// True if the worker hosts no replica of the stage.
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// Applies `f` to the addressed replica, or to every local one for [`ALL_REPLICAS`].
    /// A tuple for a replica this worker does not host is dropped.
    pub fn deliver(&mut self, replica: u32, mut f: impl FnMut(&mut S)) {
        for (id, state) in self.replicas.iter_mut() {
            if replica == ALL_REPLICAS || *id == replica {
                f(state);
            }
        }
    }

    /// Every local replica.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut S)> {
        self.replicas.iter_mut().map(|(id, s)| (*id, s))
    }
}
