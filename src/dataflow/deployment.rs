//! Everything the operators of one TARA dataflow share.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::control::Control;
use super::placement::Placement;
use crate::protocol::{Command, Params};

/// A client command submitted to request source `source` (the paper's request input queue).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Submit {
    /// The request source replica that should take the command.
    pub source: u32,
    /// The command.
    pub command: Command,
}

/// The configuration of one TARA dataflow: protocol parameters, placement, epoch length, and
/// the [`Control`] through which the outside world stops it and reads its counters.
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
    /// Where durable state lives: executor `e` keeps its checkpoints in `executor-<e>/` under
    /// it. Without it checkpoints stay in memory only, and a restarted executor recovers from a
    /// peer.
    pub state_dir: Option<PathBuf>,
    /// Committers make their records durable (a synced log) before sending commits and records.
    /// Switching this off re-creates the paper's "amnesia" hazard; it exists to test that the
    /// log is what prevents it.
    pub durable_records: bool,
    /// Shared with the code that runs the dataflow.
    pub control: Arc<Control>,
}

impl Deployment {
    /// A deployment with default epoch length and no executed stream.
    pub fn new(params: Params, placement: Placement) -> Deployment {
        let control = Control::new(&placement);
        Deployment {
            params,
            placement,
            epoch_ms: 5,
            emit_executed: false,
            state_dir: None,
            durable_records: true,
            control,
        }
    }

    /// Sets [`Deployment::state_dir`].
    pub fn state_dir(mut self, dir: PathBuf) -> Deployment {
        self.state_dir = Some(dir);
        self
    }

    /// Sets [`Deployment::emit_executed`].
    pub fn emit_executed(mut self, emit: bool) -> Deployment {
        self.emit_executed = emit;
        self
    }
}
