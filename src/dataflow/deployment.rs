//! Everything the operators of one TARA dataflow share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::control::Control;
use super::placement::Placement;
use crate::protocol::Params;
pub use crate::protocol::Submit;
pub use crate::storage::Storage;
use crate::storage::{Disk, MemDisk};

/// The configuration of one TARA dataflow: protocol parameters, placement, epoch length, durable
/// state, and the [`Control`] through which the outside world stops it and reads its counters.
///
/// ```
/// use tara::dataflow::{Deployment, Placement};
/// use tara::protocol::Params;
///
/// let params = Params::default();
/// let placement = Placement::spread(&params, 1, 3).unwrap();
/// let state = tempfile::tempdir().unwrap();
/// let deployment = Deployment::new(params.clone(), placement.clone()).state_dir(state.path().into());
/// assert!(deployment.validate().is_ok());
/// // Durable records need a state directory; without one, say that records may be lost.
/// assert!(Deployment::new(params.clone(), placement.clone()).validate().is_err());
/// assert!(Deployment::new(params, placement).durable_records(false).validate().is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct Deployment {
    /// Protocol parameters.
    pub params: Params,
    /// Which worker hosts which replica.
    pub placement: Placement,
    /// Epoch length in milliseconds: how often operators advance their capabilities, and so how
    /// often the frontier of the returned streams moves.
    pub epoch_ms: u64,
    /// Emit every executed command on the `executed` stream (it costs a copy per command and
    /// executor replica, so it is off unless a consumer needs it).
    pub emit_executed: bool,
    /// Where durable state lives: a state directory, or memory ([`Deployment::new`]'s default).
    pub storage: Storage,
    /// Committers make their records durable (a synced log) before sending commits and records.
    /// Switching this off re-creates the paper's "amnesia" hazard; it exists to test that the
    /// log is what prevents it. Needs a state directory.
    pub durable_records: bool,
    /// Shared with the code that runs the dataflow.
    pub control: Arc<Control>,
}

impl Deployment {
    /// A deployment with default epoch length, no executed stream, durable records, and state
    /// in memory (set a state directory with [`Deployment::state_dir`]).
    pub fn new(params: Params, placement: Placement) -> Deployment {
        let control = Control::new(&placement);
        let storage = Storage::Memory(MemDisk::new());
        Deployment { params, placement, epoch_ms: 5, emit_executed: false, storage, durable_records: true, control }
    }

    /// Keeps durable state in files under `dir`: committer `k`'s record log in `committer-<k>/`,
    /// executor `e`'s checkpoints in `executor-<e>/`, and so on.
    pub fn state_dir(mut self, dir: PathBuf) -> Deployment {
        self.storage = Storage::directory(dir);
        self
    }

    /// Keeps the state directory on `disk` instead of the file system (tests inject faults so).
    pub fn disk(mut self, disk: Arc<dyn Disk>) -> Deployment {
        if let Storage::Directory { disk: current, .. } = &mut self.storage {
            *current = disk;
        }
        self
    }

    /// Sets [`Deployment::emit_executed`].
    pub fn emit_executed(mut self, emit: bool) -> Deployment {
        self.emit_executed = emit;
        self
    }

    /// Sets [`Deployment::durable_records`].
    pub fn durable_records(mut self, durable: bool) -> Deployment {
        self.durable_records = durable;
        self
    }

    /// The state directory, if durable state is in files.
    pub fn state_path(&self) -> Option<&Path> {
        self.storage.root()
    }

    /// Checks what the parameters cannot: durable records need a state directory.
    pub fn validate(&self) -> Result<(), String> {
        self.params.validate().map_err(|e| e.to_string())?;
        if self.durable_records && self.state_path().is_none() {
            return Err("`durable_records = true` needs a state directory (`state_dir`): committers keep their \
                        records in files there. Set a state directory, or set durable_records = false and accept \
                        that a restarted committer forgets what it accepted (unsafe outside tests)"
                .into());
        }
        Ok(())
    }
}
