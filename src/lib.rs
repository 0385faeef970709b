//! tara: crash-tolerant state-machine replication as a timely dataflow.
//!
//! TARA (Lawniczak and Distler, "Stream-based State-Machine Replication", 2021) replicates a
//! deterministic service with a graph of small stages instead of a few large replicas.
//! Layers, top to bottom, each depending only on the ones below:
//!
//! - [`cluster`]: the embedded cluster, multi-process clusters and their supervisor,
//!   description files;
//! - [`client`]: clients with retransmission, in-process or over TCP;
//! - [`net`]: the client front ends and their wire protocol;
//! - [`dataflow`]: the timely operators, thin adapters around the stages;
//! - [`protocol`]: the sans-IO stages, one state machine per stage of the paper;
//! - [`storage`]: durable state on disk (checkpoints);
//! - [`app`]: the replicated services.
#![forbid(missing_docs)]

pub mod app;
pub mod client;
pub mod cluster;
pub mod dataflow;
pub mod net;
pub mod protocol;
pub mod storage;
