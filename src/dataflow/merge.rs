//! The `Merge` operator (Section IV): in front of the executor replicas of a worker, it turns
//! the P partitions' committed streams into one execution numbering. The rule is
//! [`crate::protocol::merge`]'s; the operator only hosts it.

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::Operator;

use super::deployment::Deployment;
use super::host::Tuples;
use super::routed::{Routed, by_worker};
use crate::protocol::merge::Merge;
use crate::protocol::topology::Tuple;

/// Renumbers every commit into execution slots, at the worker of the executors it is for.
pub fn operator<'s>(commits: Tuples<'s>, deployment: &Deployment) -> Tuples<'s> {
    let mut merge = Merge::new(&deployment.params);
    commits.unary::<CapacityContainerBuilder<Vec<Routed<Tuple>>>, _, _, _>(by_worker(), "Merge", move |_, _| {
        move |input, output| {
            input.for_each(|cap, data| {
                let merged = data.drain(..).filter_map(|routed| match routed.tuple {
                    Tuple::Commit(commit) => Some(Routed { tuple: Tuple::Commit(merge.commit(commit)?), ..routed }),
                    _ => None,
                });
                output.session(&cap).give_iterator(merged);
            })
        }
    })
}
