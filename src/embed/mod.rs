//! Embedding TARA in a user's timely or differential-dataflow job.
//!
//! One call, [`embed`], builds TARA in the user's scope and returns its streams: every executed
//! command exactly once, in log order ([`once`]), the replies, and the submissions rejected
//! where they entered ([`admit`]). [`updates`] turns executed commands into typed state
//! changes of the key-value store and the coordination service, and [`differential`] makes
//! them a differential-dataflow collection that is consistent with a prefix of the log at
//! every frontier.
//!
//! The rules:
//! - Every worker of the job calls [`embed`] with the same deployment: clones of one value in
//!   a process; in a job of several processes, an equal value built by every process (the
//!   same parameters, and the placement [`JobShape::placement`] computes from the job's own
//!   timely configuration; `embed` refuses a placement for another number of workers).
//! - The time of the submissions does not matter: the user's input may stay at time 0, advance
//!   once, or follow the wall clock; TARA's frontiers move on TARA's own clock regardless.
//! - The executed stream is delivered at worker [`DELIVERY_WORKER`] only; it carries each
//!   executed command once, in log order, across crashes and restarts of executor replicas.
//! - To stop, call [`crate::dataflow::Control::stop`] (from any thread) and run each worker
//!   with [`step_until_stopped`], which drops the user's input handles once stop is asked for:
//!   a dataflow with an open input never completes.
//!
//! # A job of several processes
//!
//! Started the timely way (`timely::execute_from_args`, or `timely::execute` with the
//! `Config` parsed from `-w -n -p -h`), each process builds its deployment from the same
//! parameters and [`JobShape::of`] its configuration, so the replicas of every stage are
//! spread over the processes and every process's workers can submit. Nothing is shared
//! between processes but the dataflow, hence:
//! - Each process has its own [`Control`]. Its stop, its fault injection (crash, restart) and
//!   its counters concern the replicas that process hosts; the counters of the others stay
//!   zero there. A stop must reach every process, or none completes: decide it in the
//!   dataflow and broadcast it with [`stop_on`] (on a position of the executed stream, on a
//!   stream of the user's own, ..).
//! - The executed stream is at worker [`DELIVERY_WORKER`], in process 0. A worker learns that
//!   its own commands executed through the dataflow: exchange the executed stream by client
//!   id back to the worker that owns the client, as `examples/timely_job.rs` does. (The
//!   [`Embedded::replies`] come once per executor replica, at the worker of the request
//!   source a command went through, which need not be the submitter's: exchange those by
//!   client too.)
//! - With a state directory, each process keeps there the files of the replicas it hosts.
//!
//! ```
//! use tara::app::kv::{KvOp, KvStore};
//! use tara::dataflow::{Deployment, Placement, Submit};
//! use tara::embed::{embed, step_until_stopped};
//! use tara::protocol::{Command, Params};
//! use tara::timely::dataflow::operators::{Input, Inspect};
//!
//! let params = Params::default();
//! let placement = Placement::spread(&params, 1, 1).unwrap();
//! let deployment = Deployment::new(params, placement).durable_records(false);
//! let control = deployment.control.clone();
//! tara::timely::execute_directly(move |worker| {
//!     let (seen_tx, seen_rx) = std::sync::mpsc::channel();
//!     let mut input = worker.dataflow::<u64, _, _>(|scope| {
//!         let (input, submissions) = scope.new_input::<Vec<Submit>>();
//!         let tara = embed(scope, submissions, &deployment, |_| KvStore::default()).unwrap();
//!         tara.executed.inspect(move |e| seen_tx.send(e.position).unwrap());
//!         input
//!     });
//!     let put = KvOp::Put { key: "k".into(), value: b"v".to_vec() }.encode();
//!     input.send(Submit { source: 0, command: Command::new(1, 1, put) });
//!     input.flush();
//!     while seen_rx.try_recv().is_err() {
//!         worker.step();
//!     }
//!     control.stop();
//!     step_until_stopped(worker, &control, input);
//! });
//! ```

pub mod admit;
pub mod differential;
pub mod job;
pub mod once;
pub mod updates;

use std::time::Duration;

use timely::dataflow::{Scope, Stream};
use timely::worker::Worker;

pub use admit::Rejected;
pub use differential::AsStateUpdates;
pub use job::{JobShape, stop_on};
pub use updates::{CoordUpdates, KvUpdates, StateUpdates};

use crate::app::Application;
use crate::dataflow::pulse::IDLE_TICK_MS;
use crate::dataflow::{Control, Deployment, Placement, Submit, tara};
use crate::protocol::{Executed, Reply};

/// The worker (index in the scope) at which [`Embedded::executed`] is delivered.
pub const DELIVERY_WORKER: usize = 0;

/// What an embedded TARA gives the user's dataflow.
pub struct Embedded<'s> {
    /// Every executed command exactly once, in log order ([`Executed::position`] 0, 1, 2, ..),
    /// at worker [`DELIVERY_WORKER`]; times never decrease along the log.
    pub executed: Stream<'s, u64, Vec<Executed>>,
    /// Every executor's reply to every command, at the worker of the request source it came
    /// through (one per executor replica: a client takes the first).
    pub replies: Stream<'s, u64, Vec<Reply>>,
    /// Submissions that did not enter TARA, with the reason, at the worker that sent them.
    pub rejected: Stream<'s, u64, Vec<Rejected>>,
}

/// Builds TARA in `scope`, fed by `submissions` (at any times the user likes), replicating the
/// application `app` makes (per executor replica, at start and at every restart). Fails if the
/// deployment is not valid, or if its placement is for another number of workers than the
/// job has. The deployment's executed stream is switched on.
pub fn embed<'s, A: Application + 'static>(
    scope: Scope<'s, u64>,
    submissions: Stream<'s, u64, Vec<Submit>>,
    deployment: &Deployment,
    app: impl Fn(u32) -> A + 'static,
) -> Result<Embedded<'s>, String> {
    let deployment = deployment.clone().emit_executed(true);
    deployment.validate()?;
    check_shape(&deployment.placement, scope.peers())?;
    let (admitted, rejected) = admit::admit(scope, submissions, &deployment);
    let streams = tara(scope, admitted, &deployment, app)?;
    let executed = once::exactly_once(streams.executed, DELIVERY_WORKER);
    Ok(Embedded { executed, replies: streams.replies, rejected })
}

/// A placement for another number of workers than the job has puts replicas on workers that
/// do not exist (timely would route their tuples to workers that host no such replica, and
/// nothing would ever execute): refused, naming both shapes.
fn check_shape(placement: &Placement, peers: usize) -> Result<(), String> {
    if placement.workers() == peers {
        return Ok(());
    }
    Err(format!(
        "the placement is for {} workers ({} processes of {}), but the job has {peers}: build it from the job's own \
         timely configuration, with `JobShape::of(&config).placement(&params)`",
        placement.workers(),
        placement.processes(),
        placement.threads()
    ))
}

/// Runs `worker` until `control` is asked to stop, then drops `inputs` (the user's input
/// handles, or anything else that keeps a dataflow open) and runs it until every dataflow
/// has completed. The one way to stop an embedded dataflow: call [`Control::stop`], from any
/// thread, and have every worker end in this function.
pub fn step_until_stopped<I>(worker: &mut Worker, control: &Control, inputs: I) {
    // Parks at most an idle tick, so that a stop asked from another thread is seen.
    let tick = Duration::from_millis(IDLE_TICK_MS);
    while !control.stopped() && worker.step_or_park(Some(tick)) {}
    drop(inputs);
    while worker.step_or_park(Some(tick)) {}
}
