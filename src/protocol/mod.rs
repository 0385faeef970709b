//! The sans-IO protocol core: one plain state machine per TARA stage (Section III).
//!
//! A stage takes tuples (`on_...`) and time (`on_tick`) and pushes the tuples it emits, and the
//! durable writes they depend on, into an [`Outbox`] that the caller provides; it knows nothing of
//! timely, threads, sockets or files. Every stage implements [`Replica`], and [`topology`] says
//! who sends which tuple to whom. The timely stage host in [`crate::dataflow`] and the
//! deterministic simulator in the tests drive the very same state machines through that trait
//! and that table.

pub mod client_table;
pub mod committer;
pub mod controller;
pub mod executor;
pub mod frame;
pub mod gc;
pub mod merge;
pub mod mutation;
pub mod params;
pub mod placement;
pub mod proposer;
pub mod quorum;
pub mod replica;
pub mod source;
pub mod topology;
pub mod tuple;
pub mod window;

pub use committer::{Committer, LogEntry};
pub use controller::Controller;
pub use executor::{Executor, Store};
pub use gc::GcSource;
pub use params::{ParamError, Params};
pub use proposer::Proposer;
pub use replica::{Counters, Outbox, Recovered, Replica, Writes};
pub use source::RequestSource;
pub use topology::{Kind, Stage, Tuple, leader_of};
pub use tuple::*;
