//! Durable state on local disk: executors' checkpoints (and, with view change, committers'
//! record logs). Files only; no protocol decisions.

pub mod checkpoints;

pub use checkpoints::{CheckpointStore, Loaded, Rejected};
