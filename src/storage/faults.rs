//! Failpoints: a [`Disk`] wrapper that makes chosen operations on chosen files fail, tear or
//! corrupt, so that tests can check the durable-state policy on the real storage code.
//!
//! ```
//! use std::path::Path;
//! use std::sync::Arc;
//! use tara::storage::{Action, Disk, Failpoint, Faulty, MemDisk, Op};
//!
//! let faulty = Faulty::new(MemDisk::new());
//! faulty.arm(Failpoint::new("records.log", Op::Sync, 1, Action::Fail));
//! let disk: Arc<dyn Disk> = Arc::new(faulty.clone());
//! disk.create_dir(Path::new("/k")).unwrap();
//! let mut log = disk.open_log(Path::new("/k/records.log")).unwrap();
//! log.write_at(0, b"entry").unwrap();
//! assert!(log.sync().is_ok(), "the first sync passes");
//! assert!(log.sync().is_err(), "the second fails");
//! assert_eq!(faulty.fired(), 1);
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::disk::{Disk, LogFile, Syncer};

/// An operation a failpoint watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Appends and whole-file replacements.
    Write,
    /// Syncs of an append-only file.
    Sync,
    /// Reads and directory listings.
    Read,
}

/// What a failpoint does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The operation fails and changes nothing (a failed disk, a full disk).
    Fail,
    /// A write puts only the first half of its bytes on disk, then fails (a crash mid-write).
    Tear,
    /// A write puts its bytes on disk with one bit flipped and reports success (silent
    /// corruption); for reads, the bytes read back have one bit flipped.
    FlipBit,
    /// Every matching operation from now on fails (an unreadable directory, a dead disk).
    FailForever,
    /// Every matching operation from now on takes this many milliseconds longer (a slow disk).
    DelayForever(u64),
}

/// One armed fault: the `after`-th matching operation (counting from 0) on a path that contains
/// `path` triggers `action`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failpoint {
    /// A part of the path of the files it applies to (`records.log`, `executor-1/`).
    pub path: String,
    /// The operation it watches.
    pub op: Op,
    /// Matching operations that pass before it fires.
    pub after: u64,
    /// What it does.
    pub action: Action,
}

impl Failpoint {
    /// A failpoint on `op` of files whose path contains `path`, firing after `after` matches.
    pub fn new(path: &str, op: Op, after: u64, action: Action) -> Failpoint {
        Failpoint { path: path.to_string(), op, after, action }
    }
}

#[derive(Debug, Default)]
struct Armed {
    points: Mutex<Vec<(Failpoint, u64)>>,
    fired: AtomicU64,
}

/// What an operation must do.
enum Verdict {
    Pass,
    Fail,
    Tear,
    Flip,
}

fn sticky(action: Action) -> bool {
    matches!(action, Action::FailForever | Action::DelayForever(_))
}

impl Armed {
    fn check(&self, path: &Path, op: Op) -> Verdict {
        let text = path.to_string_lossy();
        let mut points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        let mut verdict = Verdict::Pass;
        let mut delay_ms = 0;
        points.retain_mut(|(point, seen)| {
            if point.op != op || !text.contains(point.path.as_str()) {
                return true;
            }
            *seen += 1;
            if *seen <= point.after {
                return true;
            }
            self.fired.fetch_add(1, Ordering::Relaxed);
            verdict = match point.action {
                Action::Fail | Action::FailForever => Verdict::Fail,
                Action::Tear => Verdict::Tear,
                Action::FlipBit => Verdict::Flip,
                Action::DelayForever(ms) => {
                    delay_ms += ms;
                    Verdict::Pass
                }
            };
            sticky(point.action)
        });
        drop(points);
        if delay_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        }
        verdict
    }
}

fn injected(path: &Path, what: &str) -> io::Error {
    io::Error::other(format!("injected fault: {what} of {} failed", path.display()))
}

fn flipped(bytes: &[u8]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    let middle = bytes.len() / 2;
    if let Some(byte) = bytes.get_mut(middle) {
        *byte ^= 0x10;
    }
    bytes
}

/// A disk with failpoints. Clones share the failpoints.
#[derive(Clone, Debug)]
pub struct Faulty<D> {
    disk: Arc<D>,
    armed: Arc<Armed>,
}

impl<D: Disk> Faulty<D> {
    /// `disk`, with no failpoint armed yet.
    pub fn new(disk: D) -> Faulty<D> {
        Faulty { disk: Arc::new(disk), armed: Arc::default() }
    }

    /// Arms a failpoint.
    pub fn arm(&self, point: Failpoint) {
        self.armed.points.lock().unwrap_or_else(|p| p.into_inner()).push((point, 0));
    }

    /// Disarms every failpoint.
    pub fn disarm(&self) {
        self.armed.points.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// How many times failpoints fired.
    pub fn fired(&self) -> u64 {
        self.armed.fired.load(Ordering::Relaxed)
    }

    /// The disk underneath.
    pub fn inner(&self) -> &D {
        &self.disk
    }
}

struct FaultyLog {
    file: Box<dyn LogFile>,
    path: PathBuf,
    armed: Arc<Armed>,
}

impl LogFile for FaultyLog {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        match self.armed.check(&self.path, Op::Write) {
            Verdict::Pass => self.file.write_at(offset, bytes),
            Verdict::Fail => Err(injected(&self.path, "write")),
            Verdict::Tear => {
                self.file.write_at(offset, &bytes[..bytes.len() / 2])?;
                Err(injected(&self.path, "torn write"))
            }
            Verdict::Flip => self.file.write_at(offset, &flipped(bytes)),
        }
    }

    fn syncer(&self) -> Arc<dyn Syncer> {
        Arc::new(FaultySync { inner: self.file.syncer(), path: self.path.clone(), armed: self.armed.clone() })
    }
}

/// The syncer of a [`FaultyLog`]: its syncs count against the same failpoints.
struct FaultySync {
    inner: Arc<dyn Syncer>,
    path: PathBuf,
    armed: Arc<Armed>,
}

impl Syncer for FaultySync {
    fn sync(&self) -> io::Result<()> {
        match self.armed.check(&self.path, Op::Sync) {
            Verdict::Pass | Verdict::Flip => self.inner.sync(),
            Verdict::Fail | Verdict::Tear => Err(injected(&self.path, "sync")),
        }
    }
}

impl<D: Disk> Disk for Faulty<D> {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match self.armed.check(path, Op::Read) {
            Verdict::Pass | Verdict::Tear => self.disk.read(path),
            Verdict::Fail => Err(injected(path, "read")),
            Verdict::Flip => Ok(self.disk.read(path)?.map(|b| flipped(&b))),
        }
    }

    fn replace(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        match self.armed.check(path, Op::Write) {
            Verdict::Pass => self.disk.replace(path, bytes),
            // An atomic replacement that fails midway leaves the old file.
            Verdict::Fail | Verdict::Tear => Err(injected(path, "write")),
            Verdict::Flip => self.disk.replace(path, &flipped(bytes)),
        }
    }

    fn open_log(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        if let Verdict::Fail = self.armed.check(path, Op::Read) {
            return Err(injected(path, "open"));
        }
        let file = self.disk.open_log(path)?;
        Ok(Box::new(FaultyLog { file, path: path.to_path_buf(), armed: self.armed.clone() }))
    }

    fn preallocate_bytes(&self) -> u64 {
        self.disk.preallocate_bytes()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        match self.armed.check(dir, Op::Read) {
            Verdict::Fail => Err(injected(dir, "listing")),
            _ => self.disk.list(dir),
        }
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.disk.exists(path)
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        self.disk.create_dir(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.disk.rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.disk.remove(path)
    }
}
