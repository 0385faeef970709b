//! All durable state, and one policy for its faults.
//!
//! Every replica's durable state (committers' record logs, executors' checkpoints, proposers'
//! led views, controllers' views, sources' start counts) lives in a [`ReplicaStore`] on a
//! [`Disk`], and every write goes through one gate, [`Persist`]: persist, then release. The
//! policy is the same for every kind of file:
//!
//! - A write or sync that fails is never acknowledged: nothing that depended on it leaves, and
//!   the replica stops participating, as a replica with a failed disk would.
//! - On start, a torn tail of an append-only log is cut back to the last whole entry (that
//!   entry was never acknowledged).
//! - On start, damage anywhere else, or a file that cannot be read, makes the replica refuse to
//!   start with a [`StorageError`] that names the file and what the operator can do. The one
//!   exception is a damaged checkpoint, which holds no promise: it is skipped, and the executor
//!   catches up from an older checkpoint or a peer (Section III-D).
//!
//! The deterministic simulator runs this same layer over a [`MemDisk`]; tests inject faults
//! with [`Faulty`].

pub mod checkpoints;
pub mod disk;
pub mod error;
pub mod faults;
pub mod log;
pub mod memory;
pub mod persist;
pub mod records;
pub mod replica;
pub mod state;
pub mod value;

pub use checkpoints::{CheckpointStore, Loaded, Rejected};
pub use disk::{Disk, FsDisk, LogFile, Syncer};
pub use error::{Problem, StorageError};
pub use faults::{Action, Failpoint, Faulty, Op};
pub use memory::MemDisk;
pub use persist::Persist;
pub use records::{LoadedLog, RecordLog};
pub use replica::{Opened, ReplicaStore, remove_state_dir, replica_dir};
pub use state::Storage;
pub use value::DurableValue;
