//! The proposer operator (Sections III-C and III-E): hosts the [`Proposer`] replicas of a worker.

use timely::dataflow::Scope;

use super::deployment::Deployment;
use super::host::{Input, Tuples, host};
use crate::protocol::{Kind, Proposer, Stage};

/// Assigns sequence numbers to requests and multicasts each proposal to every committer;
/// repeats proposals that executors nack or that stall; takes over after a view change.
pub fn operator<'s>(scope: Scope<'s, u64>, inputs: Vec<Input<'s>>, deployment: &Deployment) -> Vec<(Kind, Tuples<'s>)> {
    let params = deployment.params.clone();
    host(Stage::Proposer, scope, inputs, deployment, move |id| Proposer::new(id, &params))
}
