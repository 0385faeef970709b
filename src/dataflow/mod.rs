//! The timely layer: one generic stage host ([`host`]) and, per stage, only what is specific to
//! it (how to build a replica). Routing comes from the topology table in
//! [`crate::protocol::topology`]; durable state is the storage layer's ([`crate::storage`]).
//!
//! Nothing here decides anything the paper specifies. [`tara`] builds the whole dataflow in a
//! user's scope.

pub mod build;
pub mod committer;
pub mod control;
pub mod controller;
pub mod deployment;
pub mod egress;
pub mod executor;
pub mod gc;
pub mod host;
pub mod ingress;
pub mod merge;
pub use crate::protocol::placement;
pub mod proposer;
pub mod pulse;
pub mod routed;
pub mod source;

pub use build::{TaraStreams, tara};
pub use control::{Control, ReplicaFailure, ReplicaStats};
pub use deployment::{Deployment, Storage, Submit};
pub use egress::{Mailboxes, egress};
pub use ingress::{Ingress, IngressError, ingress};
pub use placement::{Placement, PlacementError, Stage};
pub use routed::Routed;
