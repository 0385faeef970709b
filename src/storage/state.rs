//! Where a deployment's durable state lives, and how each replica's writes are made.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::disk::{Disk, FsDisk};
use super::error::StorageError;
use super::memory::MemDisk;
use super::persist::Persist;
use super::replica::{Opened, ReplicaStore};
use crate::protocol::Stage;

/// Where a deployment keeps its durable state.
#[derive(Clone, Debug)]
pub enum Storage {
    /// In memory, shared by the workers of this process: replicas keep their small durable
    /// values across injected restarts, and lose everything with the process.
    Memory(MemDisk),
    /// In files under `root` on `disk` (by default the machine's file system).
    Directory {
        /// The state directory.
        root: PathBuf,
        /// The disk it is on.
        disk: Arc<dyn Disk>,
    },
}

impl Storage {
    /// State in files under `root`.
    pub fn directory(root: PathBuf) -> Storage {
        Storage::Directory { root, disk: Arc::new(FsDisk) }
    }

    /// The state directory, if state is in files.
    pub fn root(&self) -> Option<&Path> {
        match self {
            Storage::Directory { root, .. } => Some(root),
            Storage::Memory(_) => None,
        }
    }

    /// Opens the durable state of replica `id` of `stage` (at its start and every restart). In
    /// memory, executors keep no checkpoint files: their newest checkpoints are in memory
    /// anyway, and a restarted executor catches up from a peer (copying every checkpoint into
    /// the memory disk would cost the request path a copy of the whole state per checkpoint).
    pub fn open(&self, stage: Stage, id: u32, durable_records: bool) -> Result<Opened, StorageError> {
        let (disk, root): (Arc<dyn Disk>, &Path) = match self {
            Storage::Memory(_) if stage == Stage::Executor => return Ok(ReplicaStore::volatile(stage)),
            Storage::Memory(memory) => (Arc::new(memory.clone()), Path::new("/memory")),
            Storage::Directory { root, disk } => (disk.clone(), root),
        };
        ReplicaStore::open(&disk, root, stage, id, durable_records)
    }

    /// The gate for a replica's store: record logs and checkpoints in files get a writer thread
    /// (group commit; the worker never waits for a sync), which calls `wake` when writes are
    /// durable; everything else is written on the caller's thread.
    pub fn gate(&self, store: ReplicaStore, id: u32, wake: Box<dyn Fn() + Send + Sync>) -> std::io::Result<Persist> {
        let files = matches!(self, Storage::Directory { .. });
        // A volatile store (a committer without durable records) writes nothing: a hand-off to a
        // thread would only add two wake-ups to every commit.
        if files && !store.is_volatile() && matches!(store.stage(), Stage::Committer | Stage::Executor) {
            Persist::threaded(store.stage(), id, store, wake)
        } else {
            Ok(Persist::inline(store))
        }
    }
}
