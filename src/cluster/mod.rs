//! Running TARA: description files, an embedded cluster on worker threads, one process of a
//! multi-process cluster, the supervisor that restarts a multi-process cluster, and clients.

pub mod config;
pub mod embedded;
pub mod faults;
pub mod graph;
mod mesh;
#[cfg(feature = "cli")]
pub mod plot;
pub mod process;
pub mod supervisor;
mod worker;
#[cfg(feature = "cli")]
pub mod workload;

pub use crate::client::{Client, ClientError, ClientPool, Completion};
pub use config::{ConfigError, Description};
pub use embedded::{Cluster, Options, StopReport};
