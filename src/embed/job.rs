//! A job of one process or several: its shape, from timely's own configuration, and a stop
//! that reaches every process.
//!
//! Each process of a job builds its own [`Deployment`](crate::dataflow::Deployment), and so
//! its own [`Control`]: a stop asked in one process does not reach the others. A process whose
//! workers stop waits in [`super::step_until_stopped`] until every process has stopped (the
//! dataflow spans them all), so the decision to stop must travel through the dataflow:
//! [`stop_on`] broadcasts it.

use std::sync::Arc;

use timely::CommunicationConfig;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Broadcast, Map};

use crate::dataflow::{Control, Placement, PlacementError};
use crate::protocol::Params;

/// The shape of a timely job: how many processes, how many workers each, and which process
/// this is. Read it from the job's own configuration ([`JobShape::of`]) so that the placement
/// matches the job (`embed` refuses one that does not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobShape {
    /// Processes in the job (timely's `-n`).
    pub processes: usize,
    /// Worker threads per process (timely's `-w`).
    pub workers_per_process: usize,
    /// This process's index (timely's `-p`).
    pub process: usize,
}

impl JobShape {
    /// The shape of the job `config` starts, as parsed from timely's arguments:
    ///
    /// ```
    /// use tara::embed::JobShape;
    /// use tara::timely::Config;
    ///
    /// let args = ["job", "-w", "2", "-n", "3", "-p", "1"].map(String::from);
    /// let shape = JobShape::of(&Config::from_args(args.into_iter())?);
    /// assert_eq!(shape, JobShape { processes: 3, workers_per_process: 2, process: 1 });
    /// # Ok::<(), String>(())
    /// ```
    pub fn of(config: &timely::Config) -> JobShape {
        let (processes, workers_per_process, process) = match &config.communication {
            CommunicationConfig::Thread => (1, 1, 0),
            CommunicationConfig::Process(n) | CommunicationConfig::ProcessBinary(n) => (1, *n, 0),
            CommunicationConfig::Cluster { threads, process, addresses, .. } => (addresses.len(), *threads, *process),
        };
        JobShape { processes, workers_per_process, process }
    }

    /// Every stage spread over the job ([`Placement::spread`]): replicas of a stage on distinct
    /// processes when there are enough. Every process computes the same placement.
    pub fn placement(&self, params: &Params) -> Result<Placement, PlacementError> {
        Placement::spread(params, self.processes, self.workers_per_process)
    }
}

/// Stops every process of the job once any worker's `signal` carries a record: each record
/// (reduced to `()`) is broadcast to every worker, and each worker stops its own process's
/// `control`. Every worker calls it (it builds an operator) with its process's control, and
/// then ends in [`super::step_until_stopped`].
///
/// To stop after the first `n` commands of the log (keep-alives count: they are in the log),
/// signal on the command at position `n - 1`, which the executed stream delivers once:
///
/// ```
/// use tara::app::kv::{KvOp, KvStore};
/// use tara::dataflow::Submit;
/// use tara::embed::{JobShape, embed, step_until_stopped, stop_on};
/// use tara::protocol::{Command, Params};
/// use tara::timely::dataflow::operators::Input;
/// use tara::timely::dataflow::operators::vec::Filter;
///
/// let config = tara::timely::Config::process(3);
/// let params = Params::default();
/// let placement = JobShape::of(&config).placement(&params)?;
/// let deployment = tara::dataflow::Deployment::new(params, placement).durable_records(false);
/// let n = 30;
/// tara::timely::execute(config, move |worker| {
///     let control = deployment.control.clone();
///     let mut input = worker.dataflow::<u64, _, _>(|scope| {
///         let (input, submissions) = scope.new_input::<Vec<Submit>>();
///         let tara = embed(scope, submissions, &deployment, |_| KvStore::default()).unwrap();
///         stop_on(tara.executed.filter(move |e| e.position + 1 == n), &control);
///         input
///     });
///     // Every worker is a client and submits n / 3 puts.
///     let me = worker.index() as u64;
///     for t in 1..=n / 3 {
///         let put = KvOp::Put { key: format!("{me}/{t}"), value: vec![] }.encode();
///         input.send(Submit { source: 0, command: Command::new(me + 1, t, put) });
///     }
///     input.flush(); // An input handle buffers what it was given until flushed.
///     step_until_stopped(worker, &control, input);
/// })?
/// .join();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn stop_on<'s, D: 'static>(signal: Stream<'s, u64, Vec<D>>, control: &Arc<Control>) {
    let control = control.clone();
    let everywhere = signal.map(|_| ()).broadcast();
    everywhere.sink(Pipeline, "StopOn", move |(input, _)| input.for_each(|_, _| control.stop()));
}
