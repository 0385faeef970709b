//! An executor's checkpoint directory (Section III-D: checkpoints are stored "at a predefined
//! location" before they are announced).
//!
//! Each checkpoint is one file, `checkpoint-<sequence>.tara`, holding the framed checkpoint
//! ([`crate::protocol::frame`]). A write goes to a temporary file that is synced and then
//! renamed over the final name, and the directory is synced: a crash leaves either the old set
//! of files or the new one, never a torn checkpoint under a final name. Only the newest
//! [`KEEP`] checkpoints are kept.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::protocol::frame;

/// Checkpoints kept on disk per executor.
pub const KEEP: usize = 2;

const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".tara";

/// The checkpoint files of one executor replica.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
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
    /// Opens (creating if needed) the checkpoint directory `dir`.
    pub fn open(dir: &Path) -> io::Result<CheckpointStore> {
        fs::create_dir_all(dir)?;
        Ok(CheckpointStore { dir: dir.to_path_buf() })
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
    pub fn write(&self, sequence: u64, framed: &[u8]) -> io::Result<()> {
        let path = self.path_of(sequence);
        let temporary = path.with_extension("tmp");
        let mut file = File::create(&temporary)?;
        file.write_all(framed)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, &path)?;
        File::open(&self.dir)?.sync_all()?;
        self.prune()
    }

    /// The checkpoint files present, oldest first.
    pub fn files(&self) -> io::Result<Vec<(u64, PathBuf)>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let number = name.strip_prefix(PREFIX).and_then(|n| n.strip_suffix(SUFFIX));
            if let Some(sequence) = number.and_then(|n| n.parse::<u64>().ok()) {
                files.push((sequence, path));
            }
        }
        files.sort();
        Ok(files)
    }

    fn prune(&self) -> io::Result<()> {
        let files = self.files()?;
        for (_, path) in files.iter().take(files.len().saturating_sub(KEEP)) {
            fs::remove_file(path)?;
        }
        Ok(())
    }

    /// The newest checkpoint whose file is intact and whose frame names the sequence number
    /// in its file name; every newer file that fails these checks is reported as rejected.
    pub fn load_newest(&self) -> io::Result<Loaded> {
        let mut rejected = Vec::new();
        for (sequence, path) in self.files()?.into_iter().rev() {
            let bytes = fs::read(&path)?;
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

    #[test]
    fn keeps_the_newest_two_and_loads_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        for sequence in [128, 256, 384] {
            store.write(sequence, &frame::frame(sequence, &[sequence as u8])).unwrap();
        }
        let kept: Vec<u64> = store.files().unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(kept, vec![256, 384]);
        let loaded = store.load_newest().unwrap();
        assert_eq!(loaded.newest.map(|(s, _)| s), Some(384));
        assert!(loaded.rejected.is_empty());
        assert!(fs::read_dir(dir.path()).unwrap().all(|e| !e.unwrap().path().to_string_lossy().ends_with(".tmp")));
    }

    /// Section III-D: a corrupt checkpoint file is rejected and the older intact one is used.
    #[test]
    fn a_corrupt_newest_checkpoint_falls_back_to_the_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        store.write(128, &frame::frame(128, b"old")).unwrap();
        store.write(256, &frame::frame(256, b"new")).unwrap();
        let newest = store.files().unwrap().pop().unwrap().1;
        let mut bytes = fs::read(&newest).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&newest, bytes).unwrap();
        let loaded = store.load_newest().unwrap();
        assert_eq!(loaded.newest.map(|(s, _)| s), Some(128));
        assert_eq!(loaded.rejected.len(), 1);
        assert!(loaded.rejected[0].reason.contains("checksum"), "{:?}", loaded.rejected[0]);
    }

    #[test]
    fn an_empty_or_foreign_directory_has_no_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        assert_eq!(store.load_newest().unwrap(), Loaded::default());
        fs::write(dir.path().join("checkpoint-00000000000000000007.tara"), "garbage").unwrap();
        let loaded = store.load_newest().unwrap();
        assert!(loaded.newest.is_none());
        assert_eq!(loaded.rejected.len(), 1);
    }
}
