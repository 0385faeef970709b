//! Durable state on local disk: executors' checkpoints, committers' record logs, proposers'
//! highest led view. Files only; no protocol decisions.

pub mod checkpoints;
pub mod records;
pub mod value;

pub use checkpoints::{CheckpointStore, Loaded, Rejected};
pub use records::{LoadedLog, RecordLog};
pub use value::DurableValue;
