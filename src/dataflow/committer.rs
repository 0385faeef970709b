//! The committer operator (Sections III-C and III-E): hosts the [`Committer`] replicas of a
//! worker; their record logs are the storage layer's.

use timely::dataflow::Scope;

use super::deployment::Deployment;
use super::host::{Input, Tuples, host};
use crate::protocol::{Committer, Kind, Stage};

/// Accepts proposals of the current view and multicasts each commit to every executor; on a
/// new view sends its records to the new proposer. With durable records, nothing leaves before
/// the log entries it depends on are synced.
pub fn operator<'s>(scope: Scope<'s, u64>, inputs: Vec<Input<'s>>, deployment: &Deployment) -> Vec<(Kind, Tuples<'s>)> {
    let params = deployment.params.clone();
    host(Stage::Committer, scope, inputs, deployment, move |id| Committer::new(id, &params))
}
