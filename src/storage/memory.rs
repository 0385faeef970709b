//! An in-memory [`Disk`]: what the deterministic simulator and the tests run the storage layer
//! on, and where a deployment without a state directory keeps its small durable values (they
//! survive an injected replica restart, not the process).
//!
//! Every write is durable at once: a crash loses only what the storage layer had not yet
//! handed to the disk. Tests damage files at rest with [`MemDisk::flip_bit`] and
//! [`MemDisk::truncate`], and inject failing or torn writes with [`crate::storage::Faulty`].

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::disk::{Disk, LogFile, Syncer};

#[derive(Debug, Default)]
struct Files {
    files: BTreeMap<PathBuf, Vec<u8>>,
    dirs: BTreeSet<PathBuf>,
}

/// A disk in memory. Clones share the same files.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    inner: Arc<Mutex<Files>>,
}

impl MemDisk {
    /// An empty disk.
    pub fn new() -> MemDisk {
        MemDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, Files> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Flips bit `bit` of byte `offset` of `path` (damage at rest); false if out of range.
    pub fn flip_bit(&self, path: &Path, offset: usize, bit: u8) -> bool {
        let mut files = self.lock();
        match files.files.get_mut(path).and_then(|bytes| bytes.get_mut(offset)) {
            Some(byte) => {
                *byte ^= 1 << (bit % 8);
                true
            }
            None => false,
        }
    }

    /// Cuts `path` to `length` bytes (a torn write at rest).
    pub fn truncate(&self, path: &Path, length: usize) {
        if let Some(bytes) = self.lock().files.get_mut(path) {
            bytes.truncate(length);
        }
    }

    /// The length of `path`, if it exists.
    pub fn len_of(&self, path: &Path) -> Option<usize> {
        self.lock().files.get(path).map(Vec::len)
    }

    /// Every file, in path order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lock().files.keys().cloned().collect()
    }

    fn ensure_parent(files: &mut Files, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() && !files.dirs.contains(parent) => {
                Err(io::Error::new(io::ErrorKind::NotFound, format!("no directory {}", parent.display())))
            }
            _ => Ok(()),
        }
    }
}

/// Zero bytes a log on a memory disk keeps ahead of its end: small, so that tests and the
/// simulator make logs grow often.
pub const PREALLOCATE_BYTES: u64 = 4 << 10;

struct MemLog {
    disk: MemDisk,
    path: PathBuf,
}

impl LogFile for MemLog {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut files = self.disk.lock();
        let file = files
            .files
            .get_mut(&self.path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{} is gone", self.path.display())))?;
        let start = usize::try_from(offset).map_err(|_| io::Error::other("offset beyond memory"))?;
        let end = start + bytes.len();
        if file.len() < end {
            file.resize(end, 0);
        }
        file[start..end].copy_from_slice(bytes);
        Ok(())
    }

    fn syncer(&self) -> Arc<dyn Syncer> {
        Arc::new(Durable)
    }
}

/// Appends to memory are durable at once: syncing has nothing to do.
struct Durable;

impl Syncer for Durable {
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

impl Disk for MemDisk {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        Ok(self.lock().files.get(path).cloned())
    }

    fn replace(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut files = self.lock();
        Self::ensure_parent(&mut files, path)?;
        files.files.insert(path.to_path_buf(), bytes.to_vec());
        Ok(())
    }

    fn open_log(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let mut files = self.lock();
        Self::ensure_parent(&mut files, path)?;
        files.files.entry(path.to_path_buf()).or_default();
        Ok(Box::new(MemLog { disk: self.clone(), path: path.to_path_buf() }))
    }

    fn preallocate_bytes(&self) -> u64 {
        PREALLOCATE_BYTES
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let files = self.lock();
        let mut listed: Vec<PathBuf> = files.files.keys().filter(|p| p.parent() == Some(dir)).cloned().collect();
        listed.extend(files.dirs.iter().filter(|p| p.parent() == Some(dir)).cloned());
        listed.sort();
        Ok(listed)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let files = self.lock();
        Ok(files.files.contains_key(path) || files.dirs.contains(path))
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut files = self.lock();
        for ancestor in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            files.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut files = self.lock();
        let moved = |p: &PathBuf| p.starts_with(from);
        let renamed = |p: &Path| to.join(p.strip_prefix(from).unwrap_or(p));
        let file_paths: Vec<PathBuf> = files.files.keys().filter(|p| moved(p)).cloned().collect();
        let dir_paths: Vec<PathBuf> = files.dirs.iter().filter(|p| moved(p)).cloned().collect();
        if file_paths.is_empty() && dir_paths.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no {}", from.display())));
        }
        for path in file_paths {
            if let Some(bytes) = files.files.remove(&path) {
                files.files.insert(renamed(&path), bytes);
            }
        }
        for path in dir_paths {
            files.dirs.remove(&path);
            files.dirs.insert(renamed(&path));
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut files = self.lock();
        files.files.retain(|p, _| !p.starts_with(path));
        files.dirs.retain(|p| !p.starts_with(path));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_directories_and_renames() {
        let disk = MemDisk::new();
        let dir = Path::new("/state/committer-0.init");
        assert!(disk.replace(&dir.join("x"), b"1").is_err(), "no directory yet");
        disk.create_dir(dir).unwrap();
        disk.replace(&dir.join("x"), b"1").unwrap();
        let mut log = disk.open_log(&dir.join("log")).unwrap();
        log.write_at(0, b"abc").unwrap();
        disk.rename(dir, Path::new("/state/committer-0")).unwrap();
        assert_eq!(disk.read(Path::new("/state/committer-0/x")).unwrap(), Some(b"1".to_vec()));
        assert!(!disk.exists(dir).unwrap());
        assert_eq!(disk.list(Path::new("/state")).unwrap(), vec![PathBuf::from("/state/committer-0")]);
        let log = Path::new("/state/committer-0/log");
        assert!(disk.flip_bit(log, 1, 0));
        assert_eq!(disk.read(log).unwrap(), Some(b"acc".to_vec()));
        disk.open_log(log).unwrap().write_at(4, b"d").unwrap();
        assert_eq!(disk.read(log).unwrap(), Some(b"acc\0d".to_vec()), "a write past the end grows the file");
        disk.remove(Path::new("/state")).unwrap();
        assert!(disk.paths().is_empty());
    }
}
