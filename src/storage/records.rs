//! A committer's durable record log (Section III-E: a committer must not forget what it
//! accepted or which view it promised, or a view change could lose a committed request).
//!
//! The log is one append-only file, `records.log`, of framed entries ([`super::log`]). Appends
//! are synced before the committer may send the commits and records they cover (group commit:
//! one sync per batch). Opening the log cuts a torn tail back to the last whole entry, so that
//! later appends never follow a half-written one; damage anywhere else is an error. Compaction
//! writes the committer's current state to a new file and renames it over the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::disk::{AppendFile, Disk};
use super::error::{Problem, StorageError};
use super::log;
use crate::protocol::LogEntry;

/// The file name of a record log in its committer's directory.
pub const FILE: &str = "records.log";

/// The record log of one committer replica, open for appending.
pub struct RecordLog {
    disk: Arc<dyn Disk>,
    path: PathBuf,
    file: Box<dyn AppendFile>,
}

impl std::fmt::Debug for RecordLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordLog").field("path", &self.path).finish()
    }
}

/// What opening a log found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadedLog {
    /// The whole entries, in order.
    pub entries: Vec<LogEntry>,
    /// Bytes of a torn append after the last whole entry, cut off.
    pub torn_bytes: u64,
}

fn encode(entries: &[LogEntry]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in entries {
        // A LogEntry is plain data: bincode cannot fail on it.
        let payload = bincode::serialize(entry).expect("log entries serialize");
        log::frame(&payload, &mut bytes);
    }
    bytes
}

/// Reads the log at `path`: its whole entries, and where its torn tail starts.
fn read(disk: &dyn Disk, path: &Path) -> Result<(LoadedLog, u64), StorageError> {
    let bytes = disk
        .read(path)
        .map_err(|e| StorageError::io(path, Problem::Unreadable, &e))?
        .ok_or_else(|| StorageError::new(path, Problem::Missing, "the file is gone"))?;
    let scan = log::scan(&bytes).map_err(|damage| StorageError::new(path, Problem::Damaged, damage))?;
    let mut entries = Vec::with_capacity(scan.entries.len());
    for payload in scan.entries {
        let entry = bincode::deserialize(payload)
            .map_err(|e| StorageError::new(path, Problem::Damaged, format!("an entry does not decode: {e}")))?;
        entries.push(entry);
    }
    Ok((LoadedLog { entries, torn_bytes: scan.torn_bytes as u64 }, scan.whole_bytes as u64))
}

impl RecordLog {
    /// Creates an empty log in `dir` (which must exist).
    pub fn create(disk: Arc<dyn Disk>, dir: &Path) -> Result<RecordLog, StorageError> {
        let path = dir.join(FILE);
        let file = disk.open_append(&path, 0).map_err(|e| StorageError::io(&path, Problem::WriteFailed, &e))?;
        Ok(RecordLog { disk, path, file })
    }

    /// Opens the existing log in `dir`: reads every whole entry, cuts a torn tail off, and
    /// opens the log for appending after the last whole entry.
    pub fn open(disk: Arc<dyn Disk>, dir: &Path) -> Result<(RecordLog, LoadedLog), StorageError> {
        let path = dir.join(FILE);
        let (loaded, whole) = read(disk.as_ref(), &path)?;
        let file = disk.open_append(&path, whole).map_err(|e| StorageError::io(&path, Problem::Unreadable, &e))?;
        Ok((RecordLog { disk, path, file }, loaded))
    }

    /// Reads the log in `dir` without opening it for writing.
    pub fn load(disk: &dyn Disk, dir: &Path) -> Result<LoadedLog, StorageError> {
        read(disk, &dir.join(FILE)).map(|(loaded, _)| loaded)
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entries` without syncing (group commit: call [`RecordLog::sync`] once for
    /// several writes, and treat none of them as durable before it returns).
    pub fn write(&mut self, entries: &[LogEntry]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.file.append(&encode(entries)).map_err(|e| StorageError::io(&self.path, Problem::WriteFailed, &e))
    }

    /// Makes every write so far durable.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.file.sync().map_err(|e| StorageError::io(&self.path, Problem::WriteFailed, &e))
    }

    /// Replaces the log with `entries` (the committer's current state), atomically.
    pub fn compact(&mut self, entries: &[LogEntry]) -> Result<(), StorageError> {
        let failed = |e: std::io::Error| StorageError::io(&self.path, Problem::WriteFailed, &e);
        let bytes = encode(entries);
        self.disk.replace(&self.path, &bytes).map_err(failed)?;
        self.file = self.disk.open_append(&self.path, bytes.len() as u64).map_err(failed)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Accepted, Request};
    use crate::storage::MemDisk;

    fn accepted(sequence: u64) -> LogEntry {
        LogEntry::Accept(Accepted {
            sequence,
            view: 1,
            request: Request { source: 0, number: sequence, commands: Arc::from(vec![]) },
        })
    }

    fn disk() -> (MemDisk, Arc<dyn Disk>, &'static Path) {
        let memory = MemDisk::new();
        let dir = Path::new("/k");
        memory.create_dir(dir).unwrap();
        (memory.clone(), Arc::new(memory), dir)
    }

    #[test]
    fn appended_entries_load_back() {
        let (_, disk, dir) = disk();
        let mut log = RecordLog::create(disk.clone(), dir).unwrap();
        log.write(&[LogEntry::View(1), accepted(0)]).unwrap();
        log.write(&[accepted(1)]).unwrap();
        log.sync().unwrap();
        let loaded = RecordLog::load(disk.as_ref(), dir).unwrap();
        assert_eq!(loaded.entries, vec![LogEntry::View(1), accepted(0), accepted(1)]);
        assert_eq!(loaded.torn_bytes, 0);
    }

    /// A crash in the middle of an append leaves a torn last entry: opening the log cuts it off,
    /// and what is appended afterwards is read back too. (Before, the torn bytes stayed in the
    /// file, the next appends followed them, and loading stopped at the torn entry: everything
    /// written after the restart was forgotten.)
    #[test]
    fn a_torn_tail_is_cut_and_later_appends_survive() {
        let (memory, disk, dir) = disk();
        let mut log = RecordLog::create(disk.clone(), dir).unwrap();
        log.write(&[LogEntry::View(2), accepted(5)]).unwrap();
        let path = dir.join(FILE);
        memory.truncate(&path, memory.len_of(&path).unwrap() - 3);
        let (mut log, loaded) = RecordLog::open(disk.clone(), dir).unwrap();
        assert_eq!(loaded.entries, vec![LogEntry::View(2)]);
        assert!(loaded.torn_bytes > 0);
        log.write(&[accepted(6), LogEntry::View(3)]).unwrap();
        let again = RecordLog::load(disk.as_ref(), dir).unwrap();
        assert_eq!(again.entries, vec![LogEntry::View(2), accepted(6), LogEntry::View(3)]);
        assert_eq!(again.torn_bytes, 0);
    }

    /// Damage that is not a torn tail is never read past: opening the log fails and names it.
    #[test]
    fn damage_in_the_middle_is_an_error() {
        let (memory, disk, dir) = disk();
        let mut log = RecordLog::create(disk.clone(), dir).unwrap();
        log.write(&[accepted(0), accepted(1), accepted(2)]).unwrap();
        memory.flip_bit(&dir.join(FILE), 20, 3);
        let error = RecordLog::open(disk, dir).unwrap_err();
        assert_eq!(error.problem, Problem::Damaged);
        assert!(error.to_string().contains("/k/records.log"), "{error}");
    }

    #[test]
    fn compaction_replaces_the_log() {
        let (_, disk, dir) = disk();
        let mut log = RecordLog::create(disk.clone(), dir).unwrap();
        log.write(&[accepted(0), accepted(1), accepted(2)]).unwrap();
        log.compact(&[LogEntry::Stable(2), LogEntry::View(0), accepted(2)]).unwrap();
        log.write(&[accepted(3)]).unwrap();
        let loaded = RecordLog::load(disk.as_ref(), dir).unwrap();
        assert_eq!(loaded.entries, vec![LogEntry::Stable(2), LogEntry::View(0), accepted(2), accepted(3)]);
    }

    #[test]
    fn a_missing_log_is_an_error() {
        let (_, disk, dir) = disk();
        assert_eq!(RecordLog::load(disk.as_ref(), dir).unwrap_err().problem, Problem::Missing);
    }
}
