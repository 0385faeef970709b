//! tara: crash-tolerant state-machine replication as a timely dataflow.
//!
//! TARA (Lawniczak and Distler, "Stream-based State-Machine Replication", 2021) replicates a
//! deterministic service with a graph of small stages instead of a few large replicas.
//! Layers, top to bottom, each depending only on the ones below:
//!
//! - [`cluster`]: an embedded cluster, its description files and clients;
//! - [`dataflow`]: the timely operators, thin adapters around the stages;
//! - [`protocol`]: the sans-IO stages, one state machine per stage of the paper;
//! - [`storage`]: durable state on disk (checkpoints);
//! - [`app`]: the replicated services.
#![forbid(missing_docs)]

pub mod app;
pub mod cluster;
pub mod dataflow;
pub mod protocol;
pub mod storage;
