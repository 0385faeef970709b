//! The controller operator (Section III-E): hosts the [`Controller`] replicas of a worker.

use timely::dataflow::Scope;

use super::deployment::Deployment;
use super::host::{Input, Tuples, host};
use crate::protocol::{Controller, Kind, Stage};

/// Watches the sources' targets and the executors' progress, and announces views to every
/// replica that follows them.
pub fn operator<'s>(scope: Scope<'s, u64>, inputs: Vec<Input<'s>>, deployment: &Deployment) -> Vec<(Kind, Tuples<'s>)> {
    let params = deployment.params.clone();
    host(Stage::Controller, scope, inputs, deployment, move |id| Controller::new(id, &params))
}
