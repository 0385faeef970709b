//! Tuples addressed to a replica, and the exchange pact that delivers them.

use serde::{Deserialize, Serialize};
use timely::ExchangeData;
use timely::dataflow::channels::pact::Exchange;

use super::control::Control;
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

/// The replicas a stage hosts on one worker, with their indices. A crashed replica has no state
/// (`None`): tuples for it are dropped, as a crashed process would drop them.
pub struct Local<S> {
    replicas: Vec<(u32, Option<S>, u64)>,
    stage: Stage,
}

impl<S> Local<S> {
    /// The replicas of `stage` on this worker, each made by `make`.
    pub fn new(stage: Stage, ids: Vec<u32>, mut make: impl FnMut(u32) -> S) -> Local<S> {
        Local { replicas: ids.into_iter().map(|id| (id, Some(make(id)), 0)).collect(), stage }
    }

    /// True if the worker hosts no replica of the stage.
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// Applies injected faults: a replica marked down loses its state; a replica restarted since
    /// the last call is rebuilt by `make` (which reloads whatever is durable).
    pub fn sync(&mut self, control: &Control, mut make: impl FnMut(u32) -> S) {
        for (id, state, seen) in self.replicas.iter_mut() {
            let Some(stats) = control.stats(self.stage, *id) else { continue };
            if stats.is_down() {
                *state = None;
            } else if state.is_none() || stats.generation() != *seen {
                *seen = stats.generation();
                *state = Some(make(*id));
            }
        }
    }

    /// Applies `f` to the addressed live replica, or to every live local one for
    /// [`ALL_REPLICAS`]. A tuple for a replica this worker does not host is dropped.
    pub fn deliver(&mut self, replica: u32, mut f: impl FnMut(&mut S)) {
        for (id, state, _) in self.replicas.iter_mut() {
            if let Some(state) = state.as_mut().filter(|_| replica == ALL_REPLICAS || *id == replica) {
                f(state);
            }
        }
    }

    /// Like [`Local::deliver`], telling `f` which replica it is applied to.
    pub fn deliver_to(&mut self, replica: u32, mut f: impl FnMut(u32, &mut S)) {
        for (id, state, _) in self.replicas.iter_mut() {
            if let Some(state) = state.as_mut().filter(|_| replica == ALL_REPLICAS || *id == replica) {
                f(*id, state);
            }
        }
    }

    /// True if `replica` is hosted here and running.
    pub fn is_live(&self, replica: u32) -> bool {
        self.replicas.iter().any(|(id, state, _)| *id == replica && state.is_some())
    }

    /// Like [`Local::deliver`], for a replica's consensus input, which fault injection can
    /// make it lose ([`Control::set_deaf`]).
    pub fn deliver_input(&mut self, control: &Control, replica: u32, f: impl FnMut(&mut S)) {
        let deaf = control.stats(self.stage, replica).is_some_and(|s| s.is_deaf());
        if !deaf {
            self.deliver(replica, f);
        }
    }

    /// Every live local replica.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut S)> {
        self.replicas.iter_mut().filter_map(|(id, s, _)| s.as_mut().map(|s| (*id, s)))
    }
}
