//! Running TARA: description files, an embedded cluster on worker threads, and its clients.

pub mod config;
pub mod embedded;
pub mod faults;
pub mod plot;
pub mod workload;

pub use crate::client::{Client, ClientError, ClientPool, Completion};
pub use config::{ConfigError, Description};
pub use embedded::{Cluster, Options, StopReport};
