//! A deterministic simulator of a whole TARA deployment.
//!
//! Every stage runs as the same sans-IO state machine that the timely operators wrap; one seeded
//! generator drives the network (delay, reordering, loss, duplication), the crashes and the
//! clients, and time is simulated: no threads, no real time, no IO. The same seed gives the same
//! run, event for event. After every event the simulator checks safety; at the end it checks
//! exactly-once execution, linearizability of the clients' history, and liveness.

pub mod config;
mod replicas;
mod world;

pub use config::SimConfig;
pub use world::run;
