//! The few file operations durable state needs, behind one trait: real files ([`FsDisk`]), an
//! in-memory disk for tests and the simulator ([`crate::storage::MemDisk`]), and a wrapper that
//! injects faults into either ([`crate::storage::Faulty`]).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Makes a file's appends durable; shared between threads, so that one sync can run while the
/// next appends are written and synced (pipelined group commit).
pub trait Syncer: Send + Sync {
    /// Makes every append made to the file before the call durable.
    fn sync(&self) -> io::Result<()>;
}

/// A log file, written at chosen offsets: a log writes into space it preallocated (zeros
/// already on disk), so that a sync makes only data durable and need not wait for the file
/// system's journal.
pub trait LogFile: Send {
    /// Writes `bytes` at `offset`, growing the file if they reach past its end (not durable
    /// before a sync).
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// A handle that syncs this file from any thread.
    fn syncer(&self) -> Arc<dyn Syncer>;
    /// Makes every append so far durable.
    fn sync(&mut self) -> io::Result<()> {
        self.syncer().sync()
    }
}

/// A disk: where a deployment's durable state lives.
pub trait Disk: Send + Sync + fmt::Debug {
    /// The whole content of `path`, or `None` if there is no such file.
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Replaces `path` with `bytes` atomically and durably: after a crash the file holds either
    /// its old content or `bytes`, never a mix.
    fn replace(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Opens `path` for writing at offsets; creates it (durably) if absent.
    fn open_log(&self, path: &Path) -> io::Result<Box<dyn LogFile>>;
    /// How many zero bytes a log keeps written ahead of its end on this disk.
    fn preallocate_bytes(&self) -> u64 {
        PREALLOCATE_BYTES
    }
    /// The files in `dir` (not recursive), or an empty list if `dir` does not exist.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// True if `path` exists (file or directory).
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Creates `dir` and its parents.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    /// Renames `from` to `to` atomically and durably (directories too).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file, or a directory and everything in it; absent is not an error.
    fn remove(&self, path: &Path) -> io::Result<()>;
}

/// Zero bytes a log on a real disk keeps written ahead of its end ([`Disk::preallocate_bytes`]):
/// enough for a few thousand entries, so that the file grows (and a sync waits for the
/// journal) once per that many.
pub const PREALLOCATE_BYTES: u64 = 1 << 20;

/// The machine's own file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsDisk;

/// Syncs a directory, so that a file created, renamed or removed in it stays so after a crash.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

struct FsLog(Arc<File>);

impl Syncer for File {
    fn sync(&self) -> io::Result<()> {
        // Data and the length it needs, not the other metadata: a log needs no more.
        self.sync_data()
    }
}

impl LogFile for FsLog {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&*self.0, bytes, offset)
    }

    fn syncer(&self) -> Arc<dyn Syncer> {
        self.0.clone()
    }
}

impl Disk for FsDisk {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn replace(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let temporary = path.with_extension("tmp");
        let mut file = File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, path)?;
        sync_dir(parent(path))
    }

    fn open_log(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let existed = path.exists();
        let file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path)?;
        if !existed {
            file.sync_all()?;
            sync_dir(parent(path))?;
        }
        Ok(Box::new(FsLog(Arc::new(file))))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut files = Vec::new();
        for entry in entries {
            files.push(entry?.path());
        }
        files.sort();
        Ok(files)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)?;
        sync_dir(parent(to))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let removed = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
        match removed {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}
