//! The one error of the storage layer: which file, what went wrong, and what the operator can do.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong with a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A write or sync failed: nothing that depended on it was released.
    WriteFailed,
    /// The file or its directory could not be opened, listed or read.
    Unreadable,
    /// The file's content is damaged somewhere other than a torn tail.
    Damaged,
    /// A file the replica wrote before is missing.
    Missing,
}

/// A durable-state failure. Its message names the file and says what the operator can do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageError {
    /// The file (or directory).
    pub path: PathBuf,
    /// What kind of failure.
    pub problem: Problem,
    /// The details (the OS error, where the damage is).
    pub detail: String,
    /// What the operator can do about it, for this kind of state.
    pub advice: &'static str,
}

impl StorageError {
    /// A failure of `problem` kind at `path`.
    pub fn new(path: &Path, problem: Problem, detail: impl fmt::Display) -> StorageError {
        StorageError { path: path.to_path_buf(), problem, detail: detail.to_string(), advice: "" }
    }

    /// An IO error at `path`: a failed write while running, or an unreadable file at start.
    pub fn io(path: &Path, problem: Problem, error: &io::Error) -> StorageError {
        StorageError::new(path, problem, error)
    }

    /// The same error with advice for the kind of state the file holds.
    pub fn advise(mut self, advice: &'static str) -> StorageError {
        self.advice = advice;
        self
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.problem {
            Problem::WriteFailed => "could not be written",
            Problem::Unreadable => "cannot be read",
            Problem::Damaged => "is damaged",
            Problem::Missing => "is missing",
        };
        write!(f, "{} {what} ({})", self.path.display(), self.detail)?;
        if matches!(self.problem, Problem::WriteFailed | Problem::Unreadable) {
            f.write_str("; check the disk (space, permissions, hardware), then restart the replica")?;
        }
        if !self.advice.is_empty() {
            write!(f, "; {}", self.advice)?;
        }
        Ok(())
    }
}

impl std::error::Error for StorageError {}
