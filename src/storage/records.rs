//! A committer's durable record log (Section III-E: a committer must not forget what it
//! accepted or which view it promised, or a view change could lose a committed request).
//!
//! The log is one append-only file, `records.log`, of entries `length u32 | xxh3-64 | bincode
//! of the entry`. Appends are synced before the committer may send the commits and records
//! they cover (group commit: one sync per batch). A crash can tear only the last entry; loading
//! stops at the first entry that is short or fails its checksum. Compaction writes the
//! committer's current state to a new file, syncs it, and renames it over the log.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::protocol::LogEntry;

const FILE: &str = "records.log";

/// The record log of one committer replica.
#[derive(Debug)]
pub struct RecordLog {
    dir: PathBuf,
    file: File,
    entries: u64,
}

/// What loading a log found.
#[derive(Debug, Default)]
pub struct LoadedLog {
    /// The intact entries, in order.
    pub entries: Vec<LogEntry>,
    /// Bytes after the last intact entry (a torn append), ignored.
    pub torn_bytes: u64,
}

fn encode(entry: &LogEntry, into: &mut Vec<u8>) -> io::Result<()> {
    let payload = bincode::serialize(entry).map_err(io::Error::other)?;
    into.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    into.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
    into.extend_from_slice(&payload);
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl RecordLog {
    /// Opens (creating if needed) the log in `dir` for appending.
    pub fn open(dir: &Path) -> io::Result<RecordLog> {
        fs::create_dir_all(dir)?;
        let file = OpenOptions::new().create(true).append(true).open(dir.join(FILE))?;
        Ok(RecordLog { dir: dir.to_path_buf(), file, entries: 0 })
    }

    /// Reads every intact entry of the log in `dir` (none if there is no log).
    pub fn load(dir: &Path) -> io::Result<LoadedLog> {
        let mut bytes = Vec::new();
        match File::open(dir.join(FILE)) {
            Ok(mut file) => file.read_to_end(&mut bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LoadedLog::default()),
            Err(e) => return Err(e),
        };
        let mut loaded = LoadedLog::default();
        let mut at = 0usize;
        while let Some(entry) = Self::decode_at(&bytes, &mut at) {
            loaded.entries.push(entry);
        }
        loaded.torn_bytes = (bytes.len() - at) as u64;
        Ok(loaded)
    }

    fn decode_at(bytes: &[u8], at: &mut usize) -> Option<LogEntry> {
        let header = bytes.get(*at..*at + 12)?;
        let length = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
        let checksum = u64::from_le_bytes(header[4..12].try_into().ok()?);
        let payload = bytes.get(*at + 12..*at + 12 + length)?;
        if xxhash_rust::xxh3::xxh3_64(payload) != checksum {
            return None;
        }
        let entry = bincode::deserialize(payload).ok()?;
        *at += 12 + length;
        Some(entry)
    }

    /// Appends `entries` and syncs them to disk.
    pub fn append(&mut self, entries: &[LogEntry]) -> io::Result<()> {
        self.write(entries)?;
        self.sync()
    }

    /// Appends `entries` without syncing (group commit: call [`RecordLog::sync`] once for
    /// several writes, and treat none of them as durable before it returns).
    pub fn write(&mut self, entries: &[LogEntry]) -> io::Result<()> {
        let mut bytes = Vec::new();
        for entry in entries {
            encode(entry, &mut bytes)?;
        }
        self.file.write_all(&bytes)?;
        self.entries += entries.len() as u64;
        Ok(())
    }

    /// Makes every write so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Entries appended since the log was opened or last compacted.
    pub fn appended(&self) -> u64 {
        self.entries
    }

    /// Replaces the log with `entries` (the committer's current state), atomically.
    pub fn compact(&mut self, entries: &[LogEntry]) -> io::Result<()> {
        let mut bytes = Vec::new();
        for entry in entries {
            encode(entry, &mut bytes)?;
        }
        let temporary = self.dir.join(format!("{FILE}.tmp"));
        let mut file = File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, self.dir.join(FILE))?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new().append(true).open(self.dir.join(FILE))?;
        self.entries = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::{Accepted, Request};

    fn accepted(sequence: u64) -> LogEntry {
        LogEntry::Accept(Accepted {
            sequence,
            view: 1,
            request: Request { source: 0, number: sequence, commands: Arc::from(vec![]) },
        })
    }

    #[test]
    fn appended_entries_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RecordLog::open(dir.path()).unwrap();
        log.append(&[LogEntry::View(1), accepted(0)]).unwrap();
        log.append(&[accepted(1)]).unwrap();
        let loaded = RecordLog::load(dir.path()).unwrap();
        assert_eq!(loaded.entries, vec![LogEntry::View(1), accepted(0), accepted(1)]);
        assert_eq!(loaded.torn_bytes, 0);
    }

    /// A crash in the middle of an append leaves a torn last entry: it is ignored, the rest kept.
    #[test]
    fn a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RecordLog::open(dir.path()).unwrap();
        log.append(&[LogEntry::View(2), accepted(5)]).unwrap();
        let path = dir.path().join(FILE);
        let length = fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(length - 3).unwrap();
        let loaded = RecordLog::load(dir.path()).unwrap();
        assert_eq!(loaded.entries, vec![LogEntry::View(2)]);
        assert!(loaded.torn_bytes > 0);
    }

    #[test]
    fn compaction_replaces_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RecordLog::open(dir.path()).unwrap();
        log.append(&[accepted(0), accepted(1), accepted(2)]).unwrap();
        log.compact(&[LogEntry::Stable(2), LogEntry::View(0), accepted(2)]).unwrap();
        log.append(&[accepted(3)]).unwrap();
        let loaded = RecordLog::load(dir.path()).unwrap();
        assert_eq!(loaded.entries, vec![LogEntry::Stable(2), LogEntry::View(0), accepted(2), accepted(3)]);
    }

    #[test]
    fn no_log_is_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        assert!(RecordLog::load(&dir.path().join("absent")).unwrap().entries.is_empty());
    }
}
