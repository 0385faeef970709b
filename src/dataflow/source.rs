//! The request source operator (Section III-C): hosts the [`RequestSource`] replicas of a worker.

use timely::dataflow::Scope;

use super::deployment::Deployment;
use super::host::{Input, Tuples, host};
use crate::protocol::{Kind, RequestSource, Stage};

/// Numbers and batches submitted commands into requests for the active proposer; follows the
/// replies to see every request answered, resending it otherwise.
pub fn operator<'s>(scope: Scope<'s, u64>, inputs: Vec<Input<'s>>, deployment: &Deployment) -> Vec<(Kind, Tuples<'s>)> {
    let params = deployment.params.clone();
    host(Stage::Source, scope, inputs, deployment, move |id| RequestSource::new(id, &params))
}
