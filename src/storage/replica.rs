//! The durable state of one replica: where it lives, how it is read back at a (re)start, and
//! how a stage's writes are applied.
//!
//! Each replica with durable state has its own directory under the state directory:
//! `committer-<k>/records.log`, `executor-<e>/checkpoint-<s>.tara`, `proposer-<p>/led-view`,
//! `controller-<x>/view` and `source-<r>/incarnation`. A directory is created whole (built under
//! a temporary name, then renamed), so a directory without its file means the file was lost.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::checkpoints::CheckpointStore;
use super::disk::{Disk, Syncer};
use super::error::{Problem, StorageError};
use super::records::RecordLog;
use super::value::DurableValue;
use crate::protocol::{Recovered, Stage, Writes};

/// The directory of replica `id` of `stage` under `root`, if the stage keeps durable state.
pub fn replica_dir(root: &Path, stage: Stage, id: u32) -> Option<PathBuf> {
    (stage != Stage::Gc).then(|| root.join(format!("{}-{id}", stage.replica_name())))
}

/// Whether `name` is one that tara gives a replica directory (`committer-0`, `proposer-1.init`).
fn is_replica_dir_name(name: &str) -> bool {
    Stage::ALL.iter().any(|stage| {
        name.strip_prefix(stage.replica_name())
            .and_then(|rest| rest.strip_prefix('-'))
            .map(|rest| rest.strip_suffix(".init").unwrap_or(rest))
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Removes the state directory `root` for a fresh start (`tara cluster --fresh`), but only if
/// it holds nothing but replica directories: a mistyped `state_dir` that names a user's own
/// folder is refused with the first entry that tara did not write. Returns how many replica
/// directories were removed (0 if `root` did not exist).
///
/// ```
/// let root = tempfile::tempdir().unwrap();
/// std::fs::create_dir(root.path().join("committer-0")).unwrap();
/// assert_eq!(tara::storage::replica::remove_state_dir(root.path()), Ok(1));
/// assert!(!root.path().exists());
/// ```
pub fn remove_state_dir(root: &Path) -> Result<usize, String> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("cannot read the state directory {}: {e}", root.display())),
    };
    let mut count = 0;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read the state directory {}: {e}", root.display()))?;
        let name = entry.file_name();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || !name.to_str().is_some_and(is_replica_dir_name) {
            return Err(format!(
                "{} is not a tara state directory (it holds {}, which tara did not write); \
                 not removing it: check `state_dir`",
                root.display(),
                entry.path().display()
            ));
        }
        count += 1;
    }
    std::fs::remove_dir_all(root).map_err(|e| format!("cannot remove the state directory {}: {e}", root.display()))?;
    Ok(count)
}

/// What the operator can do when a stage's durable state is unusable.
fn advice(stage: Stage) -> &'static str {
    match stage {
        Stage::Committer => {
            "a committer that forgets what it accepted can break agreement (the amnesia case): restore the \
             file from a backup; do not delete it"
        }
        Stage::Executor => "an executor rebuilds its state from a peer: remove its directory and restart it",
        Stage::Proposer => {
            "a proposer that forgets the view it led could propose twice in it: restore the file from a backup"
        }
        Stage::Controller => "controllers learn the view from their peers: remove the file and restart",
        Stage::Source => "request numbers must never repeat: restore the file from a backup",
        Stage::Gc => "",
    }
}

enum Files {
    Records(RecordLog),
    Checkpoints(CheckpointStore),
    Value(DurableValue),
    /// No durable state (garbage-collection sources; committers without durable records).
    Volatile,
}

/// The durable state of one replica, open for writing.
pub struct ReplicaStore {
    stage: Stage,
    files: Files,
}

impl std::fmt::Debug for ReplicaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaStore").field("stage", &self.stage).finish()
    }
}

/// A replica's store as opened at a (re)start, with what it read back.
#[derive(Debug)]
pub struct Opened {
    /// The store, for the replica's writes.
    pub store: ReplicaStore,
    /// The state to resume from.
    pub recovered: Recovered,
    /// Things the operator may want to know (a torn tail cut off, a damaged checkpoint skipped).
    pub notes: Vec<String>,
}

const VALUE_FILE: [(Stage, &str); 3] =
    [(Stage::Proposer, "led-view"), (Stage::Controller, "view"), (Stage::Source, "incarnation")];

fn value_name(stage: Stage) -> Option<&'static str> {
    VALUE_FILE.iter().find(|(s, _)| *s == stage).map(|(_, name)| *name)
}

impl ReplicaStore {
    /// Opens the durable state of replica `id` of `stage` under `root`: creates it on the first
    /// start, reads it back on later ones. Committers keep a record log only with
    /// `durable_records`. A file that is missing, unreadable or damaged (other than a torn log
    /// tail or a damaged checkpoint) is an error: the replica must not start.
    pub fn open(
        disk: &Arc<dyn Disk>,
        root: &Path,
        stage: Stage,
        id: u32,
        durable_records: bool,
    ) -> Result<Opened, StorageError> {
        let Some(dir) = replica_dir(root, stage, id) else { return Ok(Self::volatile(stage)) };
        if stage == Stage::Committer && !durable_records {
            return Ok(Self::volatile(stage));
        }
        let fresh = !disk.exists(&dir).map_err(|e| StorageError::io(&dir, Problem::Unreadable, &e))?;
        if fresh {
            create(disk, &dir, stage)?;
        }
        Self::read_back(disk, &dir, stage, fresh).map_err(|e| e.advise(advice(stage)))
    }

    /// A store that keeps nothing: every write is acknowledged at once and lost with the replica.
    pub fn volatile(stage: Stage) -> Opened {
        Opened { store: ReplicaStore { stage, files: Files::Volatile }, recovered: Recovered::Fresh, notes: Vec::new() }
    }

    fn read_back(disk: &Arc<dyn Disk>, dir: &Path, stage: Stage, fresh: bool) -> Result<Opened, StorageError> {
        let mut notes = Vec::new();
        let (files, recovered) = match stage {
            Stage::Committer => {
                let (log, loaded) = RecordLog::open(disk.clone(), dir)?;
                if loaded.torn_bytes > 0 {
                    notes.push(format!("cut a torn tail of {} bytes off {}", loaded.torn_bytes, log.path().display()));
                }
                (Files::Records(log), Recovered::Log(loaded.entries))
            }
            Stage::Executor => {
                let store = CheckpointStore::new(disk.clone(), dir);
                let loaded = store.load_newest()?;
                for rejected in loaded.rejected {
                    notes.push(format!("skipped damaged checkpoint {}: {}", rejected.path.display(), rejected.reason));
                }
                let newest = loaded.newest.map(|(sequence, bytes)| (sequence, Arc::new(bytes)));
                (Files::Checkpoints(store), Recovered::Checkpoint(newest))
            }
            _ => Self::read_value(disk, dir, stage)?,
        };
        let recovered = if fresh && stage != Stage::Source { Recovered::Fresh } else { recovered };
        Ok(Opened { store: ReplicaStore { stage, files }, recovered, notes })
    }

    /// A value file: read back; a request source also counts this start.
    fn read_value(disk: &Arc<dyn Disk>, dir: &Path, stage: Stage) -> Result<(Files, Recovered), StorageError> {
        let name = value_name(stage).unwrap_or("value");
        let value = DurableValue::new(disk.clone(), dir, name);
        let read =
            value.read()?.ok_or_else(|| StorageError::new(value.path(), Problem::Missing, "the file is gone"))?;
        if stage != Stage::Source {
            return Ok((Files::Value(value), Recovered::Value(read)));
        }
        let incarnation = read.unwrap_or(0) + 1;
        value.write(Some(incarnation))?;
        Ok((Files::Value(value), Recovered::Value(Some(incarnation))))
    }

    /// The stage whose state this is.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// True if this store keeps nothing (its writes cost nothing and need no writer thread).
    pub fn is_volatile(&self) -> bool {
        matches!(self.files, Files::Volatile)
    }

    /// Applies `writes`; record-log appends are durable only after [`ReplicaStore::sync`].
    pub fn apply(&mut self, writes: &Writes) -> Result<(), StorageError> {
        match &mut self.files {
            Files::Records(log) => {
                log.write(&writes.log)?;
                if let Some(entries) = &writes.compact {
                    log.compact(entries)?;
                }
            }
            Files::Checkpoints(store) => {
                for checkpoint in &writes.stores {
                    store.write(checkpoint.sequence, &checkpoint.state)?;
                }
            }
            Files::Value(value) => {
                if let Some(v) = writes.value {
                    value.write(Some(v))?;
                }
            }
            Files::Volatile => {}
        }
        Ok(())
    }

    /// What makes the writes applied so far durable, from another thread: a record log's
    /// syncer, or `None` if every write is durable when applied (checkpoints and values are
    /// written by atomic, synced replacements) or nothing is kept.
    pub fn syncer(&self) -> Option<(PathBuf, Arc<dyn Syncer>)> {
        match &self.files {
            Files::Records(log) => Some((log.path().to_path_buf(), log.syncer())),
            _ => None,
        }
    }

    /// Makes everything applied so far durable.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        match &mut self.files {
            Files::Records(log) => log.sync(),
            _ => Ok(()),
        }
    }
}

/// Creates a replica's directory with its initial files, under a temporary name first.
fn create(disk: &Arc<dyn Disk>, dir: &Path, stage: Stage) -> Result<(), StorageError> {
    let building = dir.with_extension("init");
    let failed = |path: &Path, e: std::io::Error| StorageError::io(path, Problem::WriteFailed, &e);
    disk.remove(&building).map_err(|e| failed(&building, e))?;
    disk.create_dir(&building).map_err(|e| failed(&building, e))?;
    match stage {
        Stage::Committer => drop(RecordLog::create(disk.clone(), &building)?),
        Stage::Executor | Stage::Gc => {}
        _ => DurableValue::new(disk.clone(), &building, value_name(stage).unwrap_or("value")).write(None)?,
    }
    disk.rename(&building, dir).map_err(|e| failed(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{LogEntry, Store};
    use crate::storage::MemDisk;

    fn open(disk: &Arc<dyn Disk>, stage: Stage) -> Result<Opened, StorageError> {
        ReplicaStore::open(disk, Path::new("/state"), stage, 1, true)
    }

    #[test]
    fn a_first_start_is_fresh_and_later_ones_read_back() {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let mut committer = open(&disk, Stage::Committer).unwrap();
        assert_eq!(committer.recovered, Recovered::Fresh);
        let writes = Writes { log: vec![LogEntry::View(3)], ..Writes::default() };
        committer.store.apply(&writes).unwrap();
        committer.store.sync().unwrap();
        assert_eq!(open(&disk, Stage::Committer).unwrap().recovered, Recovered::Log(vec![LogEntry::View(3)]));

        let mut proposer = open(&disk, Stage::Proposer).unwrap();
        assert_eq!(proposer.recovered, Recovered::Fresh);
        proposer.store.apply(&Writes { value: Some(4), ..Writes::default() }).unwrap();
        assert_eq!(open(&disk, Stage::Proposer).unwrap().recovered, Recovered::Value(Some(4)));

        let mut executor = open(&disk, Stage::Executor).unwrap();
        let state = Arc::new(crate::protocol::frame::frame(8, b"state"));
        let store = Store { executor: 1, sequence: 8, state: state.clone() };
        executor.store.apply(&Writes { stores: vec![store], ..Writes::default() }).unwrap();
        assert_eq!(open(&disk, Stage::Executor).unwrap().recovered, Recovered::Checkpoint(Some((8, state))));
    }

    /// Request numbers carry the source's incarnation: every start counts one up, durably.
    #[test]
    fn a_source_counts_its_starts() {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let starts: Vec<Recovered> = (0..3).map(|_| open(&disk, Stage::Source).unwrap().recovered).collect();
        assert_eq!(starts, (1..=3).map(|n| Recovered::Value(Some(n))).collect::<Vec<_>>());
    }

    /// A fresh start removes only what tara wrote: a folder with any other entry is refused.
    #[test]
    fn a_fresh_start_removes_only_a_state_directory() {
        let root = tempfile::tempdir().unwrap();
        for name in ["committer-0", "executor-12", "proposer-1.init", "source-3"] {
            std::fs::create_dir(root.path().join(name)).unwrap();
        }
        std::fs::write(root.path().join("notes.txt"), b"mine").unwrap();
        let refused = remove_state_dir(root.path()).unwrap_err();
        assert!(refused.contains("notes.txt") && refused.contains("not a tara state directory"), "{refused}");
        assert!(root.path().join("committer-0").exists(), "nothing is removed when refused");
        std::fs::remove_file(root.path().join("notes.txt")).unwrap();
        std::fs::create_dir(root.path().join("committer-x")).unwrap();
        assert!(remove_state_dir(root.path()).is_err(), "a name tara never gives is refused");
        std::fs::remove_dir(root.path().join("committer-x")).unwrap();
        assert_eq!(remove_state_dir(root.path()), Ok(4));
        assert!(!root.path().exists());
        assert_eq!(remove_state_dir(root.path()), Ok(0), "an absent directory is already fresh");
    }

    /// A replica whose directory exists but whose file is gone must not start as new.
    #[test]
    fn a_missing_file_refuses_to_start() {
        let memory = MemDisk::new();
        let disk: Arc<dyn Disk> = Arc::new(memory.clone());
        for stage in [Stage::Committer, Stage::Proposer, Stage::Controller, Stage::Source] {
            open(&disk, stage).unwrap();
            let dir = replica_dir(Path::new("/state"), stage, 1).unwrap();
            for path in memory.paths().into_iter().filter(|p| p.starts_with(&dir)) {
                memory.remove(&path).unwrap();
            }
            let error = open(&disk, stage).unwrap_err();
            assert_eq!(error.problem, Problem::Missing, "{stage:?}: {error}");
            assert!(error.to_string().contains(&dir.display().to_string()), "{error}");
        }
    }

    /// An interrupted first start leaves a half-built directory under its temporary name only.
    #[test]
    fn an_interrupted_creation_starts_over() {
        let memory = MemDisk::new();
        let disk: Arc<dyn Disk> = Arc::new(memory.clone());
        memory.create_dir(Path::new("/state/proposer-1.init")).unwrap();
        assert_eq!(open(&disk, Stage::Proposer).unwrap().recovered, Recovered::Fresh);
        assert!(!memory.exists(Path::new("/state/proposer-1.init")).unwrap());
    }

    #[test]
    fn without_durable_records_a_committer_keeps_nothing() {
        let memory = MemDisk::new();
        let disk: Arc<dyn Disk> = Arc::new(memory.clone());
        let mut opened = ReplicaStore::open(&disk, Path::new("/state"), Stage::Committer, 0, false).unwrap();
        opened.store.apply(&Writes { log: vec![LogEntry::View(1)], ..Writes::default() }).unwrap();
        assert!(memory.paths().is_empty());
    }
}
