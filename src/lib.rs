//! tara: crash-tolerant state-machine replication as a timely dataflow.
//!
//! TARA (Lawniczak and Distler, "Stream-based State-Machine Replication", 2021) replicates a
//! deterministic service with a graph of small stages instead of a few large replicas.
//! Layers, top to bottom, each depending only on the ones below:
//!
//! - [`cluster`]: the embedded cluster, multi-process clusters and their supervisor,
//!   description files;
//! - [`embed`]: TARA inside a user's timely or differential-dataflow job;
//! - [`client`] and [`net`]: clients with retransmission, in-process or over TCP; the client
//!   front ends and their wire protocol;
//! - [`dataflow`]: the timely layer: one generic stage host, routing from the topology table,
//!   and per stage only how to build a replica;
//! - [`storage`]: all durable state and its writer threads, behind "persist, then release",
//!   with one policy for failed writes and damaged files;
//! - [`protocol`]: the sans-IO stages, one state machine per stage of the paper, the tuples,
//!   and the topology table (who sends what to whom);
//! - [`app`]: the replicated services.
//!
//! A test (`tests/layout.rs`) fails when a layer uses one above it.
#![forbid(missing_docs)]

pub mod app;
pub mod client;
pub mod cluster;
pub mod dataflow;
pub mod embed;
pub mod net;
pub mod protocol;
pub mod storage;

/// The differential dataflow tara was built with.
pub use differential_dataflow;
/// The timely dataflow tara was built with (use it, not another version, in an embedding job).
pub use timely;
