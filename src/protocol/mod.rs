//! The sans-IO protocol core: one plain state machine per TARA stage (Section III).
//!
//! A stage takes tuples (`on_...`) and time (`on_tick`) and pushes the tuples it emits into an
//! outbox that the caller provides; it knows nothing of timely, threads, sockets or files. The
//! timely operators in [`crate::dataflow`] and the deterministic simulator in the tests drive the
//! very same state machines.

pub mod client_table;
pub mod committer;
pub mod controller;
pub mod executor;
pub mod frame;
pub mod gc;
pub mod mutation;
pub mod params;
pub mod proposer;
pub mod quorum;
pub mod source;
pub mod tuple;
pub mod window;

pub use committer::{Committer, CommitterOutbox, LogEntry};
pub use controller::Controller;
pub use executor::{Executor, ExecutorOutbox, Store};
pub use gc::GcSource;
pub use params::{ParamError, Params};
pub use proposer::Proposer;
pub use source::{RequestSource, SourceOutbox};
pub use tuple::*;
