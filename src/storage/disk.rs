//! The few file operations durable state needs, behind one trait: real files ([`FsDisk`]), an
//! in-memory disk for tests and the simulator ([`crate::storage::MemDisk`]), and a wrapper that
//! injects faults into either ([`crate::storage::Faulty`]).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file opened for appending.
pub trait AppendFile: Send {
    /// Appends `bytes` (not durable before [`AppendFile::sync`]).
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes every append so far durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// A disk: where a deployment's durable state lives.
pub trait Disk: Send + Sync + fmt::Debug {
    /// The whole content of `path`, or `None` if there is no such file.
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Replaces `path` with `bytes` atomically and durably: after a crash the file holds either
    /// its old content or `bytes`, never a mix.
    fn replace(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Opens `path` for appending, first cutting it back to `length` bytes (a torn tail);
    /// creates it (durably) if absent.
    fn open_append(&self, path: &Path, length: u64) -> io::Result<Box<dyn AppendFile>>;
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

struct FsAppend(File);

impl AppendFile for FsAppend {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
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

    fn open_append(&self, path: &Path, length: u64) -> io::Result<Box<dyn AppendFile>> {
        let existed = path.exists();
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        if file.metadata()?.len() > length {
            file.set_len(length)?;
            file.sync_all()?;
        }
        if !existed {
            sync_dir(parent(path))?;
        }
        Ok(Box::new(FsAppend(file)))
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
