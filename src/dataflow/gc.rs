//! The garbage-collection source operator (Section III-D): hosts the [`GcSource`] replicas of a
//! worker.

use timely::dataflow::Scope;

use super::deployment::Deployment;
use super::host::{Input, Tuples, host};
use crate::protocol::{GcSource, Kind, Stage};

/// Turns checkpoint announcements into stability thresholds for proposers, committers and
/// executors.
pub fn operator<'s>(scope: Scope<'s, u64>, inputs: Vec<Input<'s>>, deployment: &Deployment) -> Vec<(Kind, Tuples<'s>)> {
    let params = deployment.params.clone();
    host(Stage::Gc, scope, inputs, deployment, move |id| GcSource::new(id, &params))
}
