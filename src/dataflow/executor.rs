//! The executor operator (Sections III-C and III-D): hosts the [`Executor`] replicas of a worker,
//! one application instance each; their checkpoints are the storage layer's.

use timely::dataflow::Scope;

use super::deployment::Deployment;
use super::host::{Input, Tuples, host};
use crate::app::Application;
use crate::protocol::{Executor, Kind, Stage};

/// Executes committed requests in order; checkpoints are announced once stored, and a restarted
/// replica resumes from its newest intact one.
pub fn operator<'s, A: Application + 'static>(
    scope: Scope<'s, u64>,
    inputs: Vec<Input<'s>>,
    deployment: &Deployment,
    app: impl Fn(u32) -> A + 'static,
) -> Vec<(Kind, Tuples<'s>)> {
    let (params, emit) = (deployment.params.clone(), deployment.emit_executed);
    host(Stage::Executor, scope, inputs, deployment, move |id| Executor::new(id, &params, app(id)).emit_executed(emit))
}
