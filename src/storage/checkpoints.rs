//! An executor's checkpoint directory (Section III-D: checkpoints are stored "at a predefined
//! location" before they are announced).
//!
//! Each checkpoint is one file, `checkpoint-<sequence>.tara`, holding the framed checkpoint
//! ([`crate::protocol::frame`]), written by an atomic replacement: a crash leaves either the old
//! set of files or the new one, never a torn checkpoint under a final name. Only the newest
//! [`KEEP`] checkpoints are kept. A checkpoint holds no promise (an executor's state can be
//! rebuilt from a peer's checkpoint), so a damaged one is rejected, not fatal: the executor
//! starts from the newest intact one, or empty, and catches up by state transfer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::disk::Disk;
use super::error::{Problem, StorageError};
use crate::protocol::frame;

const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".tara";
/// Checkpoint files kept per executor.
pub const KEEP: usize = 2;

/// The checkpoint directory of one executor replica.
#[derive(Clone)]
pub struct CheckpointStore {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStore").field("dir", &self.dir).finish()
    }
}

/// What [`CheckpointStore::load_newest`] found.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Loaded {
    /// The newest intact checkpoint: its sequence number and framed bytes.
    pub newest: Option<(u64, Vec<u8>)>,
    /// Newer files that were skipped because they are damaged.
    pub rejected: Vec<Rejected>,
}

/// A checkpoint file that was found but not loaded, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl CheckpointStore {
    /// The checkpoint directory `dir` on `disk` (which must exist).
    pub fn new(disk: Arc<dyn Disk>, dir: &Path) -> CheckpointStore {
        CheckpointStore { disk, dir: dir.to_path_buf() }
    }

    /// The checkpoint directory `dir` on the machine's file system.
    pub fn in_dir(dir: &Path) -> CheckpointStore {
        CheckpointStore::new(Arc::new(super::disk::FsDisk), dir)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, sequence: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{sequence:020}{SUFFIX}"))
    }

    /// Writes the framed checkpoint at `sequence` durably, then deletes all but the newest
    /// [`KEEP`] checkpoints.
    pub fn write(&self, sequence: u64, framed: &[u8]) -> Result<(), StorageError> {
        let path = self.path_of(sequence);
        self.disk.replace(&path, framed).map_err(|e| StorageError::io(&path, Problem::WriteFailed, &e))?;
        let files = self.files().map_err(|e| StorageError { problem: Problem::WriteFailed, ..e })?;
        for (_, path) in files.iter().take(files.len().saturating_sub(KEEP)) {
            self.disk.remove(path).map_err(|e| StorageError::io(path, Problem::WriteFailed, &e))?;
        }
        Ok(())
    }

    /// The checkpoint files present, oldest first.
    pub fn files(&self) -> Result<Vec<(u64, PathBuf)>, StorageError> {
        let listed = self.disk.list(&self.dir).map_err(|e| StorageError::io(&self.dir, Problem::Unreadable, &e))?;
        let mut files: Vec<(u64, PathBuf)> = listed
            .into_iter()
            .filter_map(|path| {
                let name = path.file_name()?.to_str()?;
                let sequence = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?.parse().ok()?;
                Some((sequence, path))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// The newest checkpoint whose file is intact and whose frame names the sequence number
    /// in its file name; every newer file that fails these checks is reported as rejected. A
    /// file that cannot be read at all is an error.
    pub fn load_newest(&self) -> Result<Loaded, StorageError> {
        let mut rejected = Vec::new();
        for (sequence, path) in self.files()?.into_iter().rev() {
            let unreadable = |e| StorageError::io(&path, Problem::Unreadable, &e);
            let Some(bytes) = self.disk.read(&path).map_err(unreadable)? else { continue };
            match frame::unframe(&bytes) {
                Ok((framed, _)) if framed == sequence => {
                    return Ok(Loaded { newest: Some((sequence, bytes)), rejected });
                }
                Ok((framed, _)) => {
                    let reason = format!("the file name says {sequence}, the checkpoint says {framed}");
                    rejected.push(Rejected { path, reason });
                }
                Err(e) => rejected.push(Rejected { path, reason: e.to_string() }),
            }
        }
        Ok(Loaded { newest: None, rejected })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Disk, MemDisk};

    fn store() -> (MemDisk, CheckpointStore) {
        let memory = MemDisk::new();
        memory.create_dir(Path::new("/e")).unwrap();
        let store = CheckpointStore::new(Arc::new(memory.clone()), Path::new("/e"));
        (memory, store)
    }

    #[test]
    fn keeps_the_newest_two_and_loads_the_newest() {
        let (memory, store) = store();
        for sequence in [128, 256, 384] {
            store.write(sequence, &frame::frame(sequence, &[sequence as u8])).unwrap();
        }
        let kept: Vec<u64> = store.files().unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(kept, vec![256, 384]);
        let loaded = store.load_newest().unwrap();
        assert_eq!(loaded.newest.map(|(s, _)| s), Some(384));
        assert!(loaded.rejected.is_empty());
        assert!(memory.paths().iter().all(|p| !p.to_string_lossy().ends_with(".tmp")));
    }

    /// Section III-D: a corrupt checkpoint file is rejected and the older intact one is used.
    #[test]
    fn a_corrupt_newest_checkpoint_falls_back_to_the_older_one() {
        let (memory, store) = store();
        store.write(128, &frame::frame(128, b"old")).unwrap();
        store.write(256, &frame::frame(256, b"new")).unwrap();
        let newest = store.files().unwrap().pop().unwrap().1;
        let last = memory.len_of(&newest).unwrap() - 1;
        memory.flip_bit(&newest, last, 7);
        let loaded = store.load_newest().unwrap();
        assert_eq!(loaded.newest.map(|(s, _)| s), Some(128));
        assert_eq!(loaded.rejected.len(), 1);
        assert!(loaded.rejected[0].reason.contains("checksum"), "{:?}", loaded.rejected[0]);
    }

    #[test]
    fn an_empty_or_foreign_directory_has_no_checkpoint() {
        let (memory, store) = store();
        memory.replace(Path::new("/e/notes.txt"), b"x").unwrap();
        assert_eq!(store.load_newest().unwrap(), Loaded::default());
        memory.replace(Path::new("/e/checkpoint-00000000000000000007.tara"), b"garbage").unwrap();
        let loaded = store.load_newest().unwrap();
        assert!(loaded.newest.is_none());
        assert_eq!(loaded.rejected.len(), 1);
    }
}
