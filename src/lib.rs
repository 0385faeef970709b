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
//!
//! # Start here
//!
//! Replicate a key-value store on an embedded cluster (three replicas of every stage, f = 1,
//! in this process) and talk to it with a client:
//!
//! ```
//! use tara::app::kv::{KvOp, KvResult, KvStore};
//! use tara::cluster::{Cluster, Description};
//!
//! let cluster = Cluster::start(&Description::embedded(), |_replica| KvStore::default())?;
//! let mut client = cluster.client();
//! client.invoke(KvOp::Put { key: "greeting".into(), value: b"hello".to_vec() }.encode())?;
//! let answer = KvResult::decode(&client.invoke(KvOp::Get { key: "greeting".into() }.encode())?)?;
//! assert_eq!(answer, KvResult::Value(Some(b"hello".to_vec())));
//! assert!(cluster.stop().digests_agree());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! To run TARA inside your own timely or differential-dataflow job instead, see [`embed`].
//!
//! # Building a [`Deployment`](dataflow::Deployment)
//!
//! A deployment is what every worker needs to build TARA: the protocol parameters, where each
//! replica runs, and where durable state lives. The recommended way is parameters, a spread
//! placement for your job's shape, and a state directory (committers, proposers and sources
//! must not forget what they promised, so durable records are the default):
//!
//! ```
//! use tara::dataflow::{Deployment, Placement};
//! use tara::protocol::Params;
//!
//! let params = Params { batch_size: 16, ..Params::default() };
//! // One process with three workers; a job started with `-n 3 -w 2` would pass (3, 2).
//! let placement = Placement::spread(&params, 1, 3)?;
//! let state = tempfile::tempdir()?;
//! let deployment = Deployment::new(params, placement).state_dir(state.path().into());
//! deployment.validate()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `Deployment::validate` (also run by [`embed::embed`]) rejects a deployment that asks for
//! durable records without a state directory; `.durable_records(false)` is for tests that
//! accept committers that forget on a crash. A description file gives the same through
//! [`cluster::Description::deployment`].
//!
//! # Rules for an embedding job
//!
//! - Build with the [`timely`] and [`differential_dataflow`] that tara re-exports: another
//!   version is another type, and the streams will not connect.
//! - The time of your submissions input does not matter (TARA runs on its own clock), the
//!   executed stream comes once per command at worker [`embed::DELIVERY_WORKER`], and the one
//!   way to stop is [`dataflow::Control::stop`] with every worker ending in
//!   [`embed::step_until_stopped`]. The details are in [`embed`].
//! - A job of several processes (timely's `-w -n -p -h`): every process builds the same
//!   deployment, its placement from the job's own configuration ([`embed::JobShape`]). Each
//!   process has its own `Control`, so a stop is decided in the dataflow and broadcast to
//!   every process ([`embed::stop_on`]); a worker learns that its commands executed from the
//!   executed stream, delivered in process 0 and exchanged back to it by client id.
//! - Set `panic = "abort"` in your binary's profile, as tara's own binary does. Timely is
//!   fail-stop: a worker that panics leaves the other workers (and the other processes)
//!   waiting forever for its progress messages, so a process must die whole to be restarted
//!   and recover from its durable state.
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

/// The README's code, compiled as doctests so that it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
