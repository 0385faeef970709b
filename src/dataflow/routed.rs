//! Tuples addressed to a worker, and the routing of every tuple kind, derived from the topology.

use serde::{Deserialize, Serialize};
use timely::ExchangeData;
use timely::dataflow::channels::pact::Exchange;

use super::placement::Placement;
use crate::protocol::topology::{self, Kind, ROUTES, To, Tuple};
use crate::protocol::{Params, Stage};

/// The replica index that addresses every replica of the receiving stage on the worker.
pub const ALL_REPLICAS: u32 = u32::MAX;

/// A tuple on its way to replica `replica` of the next stage, which worker `worker` hosts.
/// Multicast is one copy per destination worker.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Routed<T> {
    /// The destination worker.
    pub worker: u32,
    /// The destination replica of the receiving stage, or [`ALL_REPLICAS`].
    pub replica: u32,
    /// The tuple.
    pub tuple: T,
}

/// The pact that delivers every routed tuple to its destination worker.
pub fn by_worker<T: ExchangeData>() -> Exchange<Routed<T>, impl FnMut(&Routed<T>) -> u64 + 'static> {
    Exchange::new(|routed: &Routed<T>| routed.worker as u64)
}

/// Where each tuple kind goes on this placement, from the topology table.
pub struct Addresses {
    params: Params,
    placement: Placement,
    /// Per kind, then per partition of the tuple (index 0: no partition, `i + 1`: partition
    /// `i`), the workers a multicast goes to: every worker hosting one of its receivers.
    every: Vec<Vec<Vec<u32>>>,
    me: u32,
}

impl Addresses {
    /// The addresses of every kind, for the operator on worker `me`.
    pub fn new(params: &Params, placement: &Placement, me: usize) -> Addresses {
        let every = ROUTES
            .iter()
            .map(|route| {
                let partitions = (0..params.partitions as u32).map(Some);
                std::iter::once(None).chain(partitions).map(|p| Self::hosting(params, placement, route.to, p)).collect()
            })
            .collect();
        Addresses { params: params.clone(), placement: placement.clone(), every, me: me as u32 }
    }

    /// The workers hosting the replicas of `stages` that a tuple of `partition` goes to.
    fn hosting(params: &Params, placement: &Placement, stages: &[Stage], partition: Option<u32>) -> Vec<u32> {
        let mut workers: Vec<u32> = stages
            .iter()
            .flat_map(|stage| topology::receivers(*stage, partition, params).map(|r| placement.worker_of(*stage, r)))
            .collect();
        workers.sort_unstable();
        workers.dedup();
        workers
    }

    /// Addresses `tuple` to its receivers, one copy per destination worker.
    pub fn address(&self, tuple: Tuple, mut send: impl FnMut(Routed<Tuple>)) {
        let kind = tuple.kind();
        let route = topology::route(kind);
        match route.to_whom {
            To::Every => {
                let partition = tuple.partition(&self.params).map_or(0, |p| p as usize + 1);
                let workers = &self.every[kind as usize][partition];
                for worker in workers.iter().skip(1) {
                    send(Routed { worker: *worker, replica: ALL_REPLICAS, tuple: tuple.clone() });
                }
                if let Some(worker) = workers.first() {
                    send(Routed { worker: *worker, replica: ALL_REPLICAS, tuple });
                }
            }
            To::Named | To::Leader => {
                let stage: Stage = route.to[0];
                // A named replica that does not exist maps to worker 0, which does not host it.
                let replica = topology::destination(route, &tuple, &self.params).unwrap_or(ALL_REPLICAS - 1);
                let worker = self.placement.worker_of(stage, replica);
                // A forwarded reply also goes to the front end that took the command.
                if let Some(origin) = tuple.origin().filter(|o| *o != worker) {
                    send(Routed { worker: origin, replica, tuple: tuple.clone() });
                }
                send(Routed { worker, replica, tuple });
            }
            To::Out => send(Routed { worker: self.me, replica: ALL_REPLICAS, tuple }),
        }
    }

    /// The kinds a stage emits, in output-port order.
    pub fn outputs(stage: Stage) -> Vec<Kind> {
        topology::outputs(stage).map(|r| r.kind).collect()
    }
}
