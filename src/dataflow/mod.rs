//! The timely layer: one operator per stage, each a thin adapter that routes tuples to the
//! replicas its worker hosts, wakes them on time, and emits what they return.
//!
//! The protocol itself lives in [`crate::protocol`]; nothing here decides anything the paper
//! specifies. [`tara`] builds the whole dataflow in a user's scope.

pub mod build;
pub mod committer;
pub mod control;
pub mod controller;
pub mod deployment;
pub mod egress;
pub mod executor;
pub mod gc;
pub mod ingress;
pub mod placement;
pub mod proposer;
pub mod pulse;
pub mod routed;
pub mod source;

pub use build::{TaraStreams, tara};
pub use control::{Control, ReplicaStats};
pub use deployment::{Deployment, Submit};
pub use egress::{Mailboxes, egress};
pub use ingress::{Ingress, IngressError, ingress};
pub use placement::{Placement, PlacementError, Stage};
pub use routed::Routed;
