//! The network edge of a process: the client wire protocol and the TCP front end that serves
//! it. (Replicas talk to each other through timely's own channels.)

pub mod frontend;
pub mod wire;

pub use frontend::{FrontEnd, FrontEndConfig, Limits};
pub use wire::{ClientFrame, FrontEndCounters, ReplicaStatus, ServerFrame};
