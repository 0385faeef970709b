//! A committer's durable record log (Section III-E: a committer must not forget what it
//! accepted or which view it promised, or a view change could lose a committed request).
//!
//! The log is one file, `records.log`, of framed entries ([`super::log`]) followed by zeros.
//! Writes are synced before the committer may send the commits and records they cover (group
//! commit: one sync per batch). The log keeps [`Disk::preallocate_bytes`] of zeros written
//! ahead of its end, and writes entries over them: a sync then makes only data durable
//! (`fdatasync` of blocks the file already has), not a new length, which would make it wait
//! for the file system's journal. When the space ahead runs short, the write that uses it also
//! grows the file by a quarter of that space (that one sync pays for the new length).
//!
//! Opening the log reads every whole entry up to the first zero or torn one; a torn entry is
//! overwritten with zeros (and synced) before anything else is written, so that later entries
//! never follow a half-written one; damage anywhere else is an error. Compaction writes the
//! committer's current state to a new file, renames it over the log, and preallocates again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::disk::{Disk, LogFile, Syncer};
use super::error::{Problem, StorageError};
use super::log;
use crate::protocol::LogEntry;

/// The file name of a record log in its committer's directory.
pub const FILE: &str = "records.log";

/// The record log of one committer replica, open for appending.
pub struct RecordLog {
    disk: Arc<dyn Disk>,
    path: PathBuf,
    file: Box<dyn LogFile>,
    /// Where the next entry goes: the end of the last whole entry.
    end: u64,
    /// The file's length: everything from `end` up to it is zero.
    length: u64,
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
    /// Bytes of a torn write after the last whole entry, cut off.
    pub torn_bytes: u64,
}

/// Where a log read back ends: its last whole entry, the torn bytes after it, and its length.
struct Extent {
    whole: u64,
    torn: u64,
    length: u64,
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

/// Reads the log at `path`: its whole entries, and where it ends.
fn read(disk: &dyn Disk, path: &Path) -> Result<(LoadedLog, Extent), StorageError> {
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
    let extent = Extent { whole: scan.whole_bytes as u64, torn: scan.torn_bytes as u64, length: bytes.len() as u64 };
    Ok((LoadedLog { entries, torn_bytes: extent.torn }, extent))
}

impl RecordLog {
    /// Creates an empty log in `dir` (which must exist).
    pub fn create(disk: Arc<dyn Disk>, dir: &Path) -> Result<RecordLog, StorageError> {
        let path = dir.join(FILE);
        let file = disk.open_log(&path).map_err(|e| StorageError::io(&path, Problem::WriteFailed, &e))?;
        let mut log = RecordLog { disk, path, file, end: 0, length: 0 };
        log.preallocate()?;
        Ok(log)
    }

    /// Opens the existing log in `dir`: reads every whole entry, overwrites a torn tail with
    /// zeros, and opens the log for writing after the last whole entry.
    pub fn open(disk: Arc<dyn Disk>, dir: &Path) -> Result<(RecordLog, LoadedLog), StorageError> {
        let path = dir.join(FILE);
        let (loaded, extent) = read(disk.as_ref(), &path)?;
        let file = disk.open_log(&path).map_err(|e| StorageError::io(&path, Problem::Unreadable, &e))?;
        let mut log = RecordLog { disk, path, file, end: extent.whole, length: extent.length };
        if extent.torn > 0 {
            let zeros = vec![0; usize::try_from(extent.torn).unwrap_or(usize::MAX)];
            log.file.write_at(extent.whole, &zeros).map_err(|e| log.failed(e))?;
            log.sync()?;
        }
        Ok((log, loaded))
    }

    fn failed(&self, e: std::io::Error) -> StorageError {
        StorageError::io(&self.path, Problem::WriteFailed, &e)
    }

    /// Writes zeros over the space ahead of the end, up to [`Disk::preallocate_bytes`], and
    /// syncs them (at a creation: the log is about to be used).
    fn preallocate(&mut self) -> Result<(), StorageError> {
        let target = self.end + self.disk.preallocate_bytes();
        if self.length < target {
            let zeros = vec![0; usize::try_from(target - self.length).unwrap_or(usize::MAX)];
            self.file.write_at(self.length, &zeros).map_err(|e| self.failed(e))?;
            self.length = target;
        }
        self.sync()
    }

    /// Reads the log in `dir` without opening it for writing.
    pub fn load(disk: &dyn Disk, dir: &Path) -> Result<LoadedLog, StorageError> {
        read(disk, &dir.join(FILE)).map(|(loaded, _)| loaded)
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `entries` after the last ones without syncing (group commit: call
    /// [`RecordLog::sync`] once for several writes, and treat none of them as durable before it
    /// returns). If they leave less than half the preallocated space ahead, zeros that grow the
    /// file go out in the same write.
    pub fn write(&mut self, entries: &[LogEntry]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut bytes = encode(entries);
        let end = self.end + bytes.len() as u64;
        let ahead = self.disk.preallocate_bytes();
        if self.length < end + ahead / 2 {
            let grown = end + ahead / 2 + ahead / 4;
            bytes.resize(usize::try_from(grown - self.end).unwrap_or(usize::MAX), 0);
            self.length = self.length.max(grown);
        }
        self.file.write_at(self.end, &bytes).map_err(|e| self.failed(e))?;
        self.end = end;
        Ok(())
    }

    /// Makes every write so far durable.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.file.sync().map_err(|e| self.failed(e))
    }

    /// A handle that makes every write made before its call durable, from any thread (a
    /// compaction makes the writes before it durable itself, so a handle taken before it stays
    /// valid for them).
    pub fn syncer(&self) -> Arc<dyn Syncer> {
        self.file.syncer()
    }

    /// Replaces the log with `entries` (the committer's current state) followed by the
    /// preallocated zeros, atomically (one sync for both).
    pub fn compact(&mut self, entries: &[LogEntry]) -> Result<(), StorageError> {
        let mut bytes = encode(entries);
        let end = bytes.len();
        bytes.resize(end + usize::try_from(self.disk.preallocate_bytes()).unwrap_or(0), 0);
        self.disk.replace(&self.path, &bytes).map_err(|e| self.failed(e))?;
        self.file = self.disk.open_log(&self.path).map_err(|e| self.failed(e))?;
        (self.end, self.length) = (end as u64, bytes.len() as u64);
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

    /// A crash in the middle of a write leaves a torn last entry inside the preallocated space
    /// (its first bytes, then zeros): opening the log overwrites it with zeros, and what is
    /// written afterwards is read back too, with nothing of the torn entry between.
    #[test]
    fn a_torn_entry_in_preallocated_space_is_cut_and_later_writes_survive() {
        let (memory, disk, dir) = disk();
        let mut log = RecordLog::create(disk.clone(), dir).unwrap();
        log.write(&[LogEntry::View(2), accepted(5)]).unwrap();
        let (length, end) = (memory.len_of(&dir.join(FILE)).unwrap(), log.end);
        log.file.write_at(end - 3, &[0; 3]).unwrap();
        let (mut log, loaded) = RecordLog::open(disk.clone(), dir).unwrap();
        assert_eq!(loaded.entries, vec![LogEntry::View(2)]);
        assert!(loaded.torn_bytes > 0);
        assert_eq!(memory.len_of(&dir.join(FILE)), Some(length), "cutting keeps the preallocated space");
        log.write(&[LogEntry::View(3)]).unwrap();
        let again = RecordLog::load(disk.as_ref(), dir).unwrap();
        assert_eq!(again.entries, vec![LogEntry::View(2), LogEntry::View(3)]);
        assert_eq!(again.torn_bytes, 0);
    }

    /// A new log is its preallocated zeros: the zero tail is the end of the log, not damage;
    /// entries are written over it, and the file does not grow while there is room.
    #[test]
    fn a_new_log_is_zeros_and_entries_are_written_over_them() {
        let (memory, disk, dir) = disk();
        let mut log = RecordLog::create(disk.clone(), dir).unwrap();
        let path = dir.join(FILE);
        let preallocated = memory.len_of(&path).unwrap();
        assert_eq!(preallocated as u64, crate::storage::memory::PREALLOCATE_BYTES);
        assert_eq!(RecordLog::load(disk.as_ref(), dir).unwrap(), LoadedLog::default());
        log.write(&[LogEntry::View(1)]).unwrap();
        assert_eq!(memory.len_of(&path), Some(preallocated), "written over the zeros");
        assert_eq!(RecordLog::load(disk.as_ref(), dir).unwrap().entries, vec![LogEntry::View(1)]);
    }

    /// Writes that use up the preallocated space grow the file by more zeros, again and again;
    /// a restart reads every entry back across the grown parts, and writes after it land after
    /// the last entry, not after the zeros.
    #[test]
    fn the_log_grows_past_its_preallocated_space_and_restarts() {
        let (memory, disk, dir) = disk();
        let mut log = RecordLog::create(disk.clone(), dir).unwrap();
        let path = dir.join(FILE);
        let first = memory.len_of(&path).unwrap();
        let written: Vec<LogEntry> = (0..400).map(accepted).collect();
        written.chunks(7).for_each(|chunk| log.write(chunk).unwrap());
        let grown = memory.len_of(&path).unwrap();
        assert!(grown > 3 * first, "the log grew past several preallocations: {grown} bytes");
        let (mut log, loaded) = RecordLog::open(disk.clone(), dir).unwrap();
        assert_eq!((loaded.entries, loaded.torn_bytes), (written.clone(), 0));
        log.write(&[LogEntry::View(9)]).unwrap();
        let again = RecordLog::load(disk.as_ref(), dir).unwrap();
        assert_eq!(again.entries.len(), 401);
        assert_eq!(again.entries.last(), Some(&LogEntry::View(9)));
        let zeros_ahead = memory.len_of(&path).unwrap() as u64 - log.end;
        assert!(zeros_ahead >= crate::storage::memory::PREALLOCATE_BYTES / 2, "{zeros_ahead} bytes ahead");
    }

    /// Something that is not zero in the preallocated space after the last entry, and not a
    /// torn entry, is damage: the log refuses to open.
    #[test]
    fn damage_in_the_zero_tail_is_an_error() {
        let (memory, disk, dir) = disk();
        let mut log = RecordLog::create(disk.clone(), dir).unwrap();
        log.write(&[accepted(0)]).unwrap();
        assert!(memory.flip_bit(&dir.join(FILE), log.end as usize + 100, 1));
        let error = RecordLog::open(disk, dir).unwrap_err();
        assert_eq!(error.problem, Problem::Damaged, "{error}");
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
        // The compacted file is preallocated again, and a restart writes after its entries.
        let (mut log, _) = RecordLog::open(disk.clone(), dir).unwrap();
        log.write(&[accepted(4)]).unwrap();
        assert_eq!(RecordLog::load(disk.as_ref(), dir).unwrap().entries.len(), 5);
    }

    #[test]
    fn a_missing_log_is_an_error() {
        let (_, disk, dir) = disk();
        assert_eq!(RecordLog::load(disk.as_ref(), dir).unwrap_err().problem, Problem::Missing);
    }
}
