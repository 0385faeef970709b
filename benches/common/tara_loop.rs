//! tara with closed-loop clients inside the dataflow: the embedding API, with the replies stream
//! fed back into the submissions through a feedback loop (the same client mechanism as the
//! bare-timely baseline).

use std::sync::Arc;
use std::time::Duration;

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::{ConnectLoop, Feedback};

use super::closed_loop::{Driver, Measurement, Stats, measure};
use tara::app::{Application, RestoreError};
use tara::dataflow::pulse::{Pulse, give};
use tara::dataflow::{Deployment, Placement, Stage, Submit, tara};
use tara::protocol::{Command, Params, Reply, topology};

/// The cheapest deterministic service: counts operations and answers the count.
#[derive(Default)]
pub struct Counter(u64);

impl Application for Counter {
    fn execute(&mut self, _op: &[u8]) -> Vec<u8> {
        self.0 += 1;
        self.0.to_le_bytes().to_vec()
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        let bytes: [u8; 8] = snapshot.try_into().map_err(|_| RestoreError("8 bytes expected".into()))?;
        self.0 = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// What the clients send.
#[derive(Clone, Copy)]
pub enum Ops {
    /// 64 opaque bytes (for the [`Counter`] service).
    Opaque,
    /// The paper's workload on the coordination service: half set data, half get data.
    Coordination,
}

/// Runs tara on 3 workers with `clients` closed-loop clients.
pub fn run<A: Application + 'static>(
    clients: usize,
    params: Params,
    ops: Ops,
    app: impl Fn(u32) -> A + Send + Sync + 'static,
    warmup: Duration,
    seconds: Duration,
) -> Measurement {
    run_clients((1..=clients as u64).collect(), params, ops, app, warmup, seconds)
}

/// Where a run's dataflow lives: its worker threads, and its durable state (in memory unless a
/// state directory is given: with one, executors write their checkpoints to files, as an
/// embedded cluster does).
pub struct Shape {
    /// Timely worker threads of the one process.
    pub workers: usize,
    /// The state directory, if durable state goes to files.
    pub state_dir: Option<std::path::PathBuf>,
}

impl Shape {
    /// `workers` threads, state in memory.
    pub fn threads(workers: usize) -> Shape {
        Shape { workers, state_dir: None }
    }
}

/// Runs tara on 3 workers with closed-loop clients of the given ids (a client's id decides its
/// partition: `id mod partitions`).
pub fn run_clients<A: Application + 'static>(
    clients: Vec<u64>,
    params: Params,
    ops: Ops,
    app: impl Fn(u32) -> A + Send + Sync + 'static,
    warmup: Duration,
    seconds: Duration,
) -> Measurement {
    run_on(Shape::threads(3), clients, params, ops, app, warmup, seconds)
}

/// Runs tara in `shape` (one process) with closed-loop clients of the given ids.
pub fn run_on<A: Application + 'static>(
    shape: Shape,
    clients: Vec<u64>,
    params: Params,
    ops: Ops,
    app: impl Fn(u32) -> A + Send + Sync + 'static,
    warmup: Duration,
    seconds: Duration,
) -> Measurement {
    let workers = shape.workers;
    let placement = Placement::spread(&params, 1, workers).expect("a valid placement");
    // As in the other in-dataflow runs, committers keep no log: this measures the dataflow core.
    let mut deployment = Deployment::new(params, placement).durable_records(false);
    if let Some(dir) = shape.state_dir {
        deployment = deployment.state_dir(dir);
    }
    let control = deployment.control.clone();
    let stats = Stats::new();
    let stats2 = stats.clone();
    let app = Arc::new(app);
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let (deployment, stats, app) = (deployment.clone(), stats2.clone(), app.clone());
        super::closed_loop::profile::install(worker, &stats);
        worker.dataflow::<u64, _, _>(|scope| {
            let (handle, submissions) = scope.feedback::<Vec<Submit>>(1);
            let app = app.clone();
            let streams = tara(scope, submissions, &deployment, move |id| app(id)).expect("a valid deployment");
            client_op(streams.replies, clients.clone(), &deployment, ops, &stats).connect_loop(handle);
        });
        while worker.step_or_park(None) {}
    })
    .expect("timely starts");
    measure(&stats, warmup, seconds, move || {
        if std::env::var_os("TARA_PAPER_PROFILE").is_some() {
            eprintln!("{}", counters(&control));
        }
        control.stop();
        drop(guards.join());
    })
}

/// Client c submits through one request source of its partition; it runs on that source's
/// worker, where its replies arrive.
fn client_op<'s>(
    replies: Stream<'s, u64, Vec<Reply>>,
    clients: Vec<u64>,
    deployment: &Deployment,
    ops: Ops,
    stats: &Arc<Stats>,
) -> Stream<'s, u64, Vec<Submit>> {
    let scope = replies.scope();
    let params = deployment.params.clone();
    let source_of = move |client: u64| topology::source_of(client, (client / params.partitions as u64) as u32, &params);
    let local_sources = deployment.placement.replicas_on(Stage::Source, scope.index());
    let mine: Vec<u64> = clients.into_iter().filter(|c| local_sources.contains(&source_of(*c))).collect();
    let index_of: std::collections::HashMap<u64, usize> = mine.iter().enumerate().map(|(i, c)| (*c, i)).collect();
    let mut driver = Driver::new(mine.into_iter(), stats.clone());
    let mut builder = OperatorBuilder::new("Clients".to_owned(), scope);
    let info = builder.operator_info();
    let mut input = builder.new_input(replies, Pipeline);
    let (output, submissions) = builder.new_output();
    let mut output = OutputBuilder::from(output);
    let control = deployment.control.clone();
    let hosting = !driver.clients.is_empty();
    builder.build(move |caps| {
        let mut pulse = Pulse::new(caps, scope.activator_for(info.address.clone()), control, 5, hosting);
        let mut ready: Vec<usize> = (0..driver.clients.len()).collect();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        move |_| {
            let alive = pulse.begin();
            input.for_each(|_, data| {
                for reply in data.drain(..) {
                    let Some(index) = index_of.get(&reply.client) else { continue };
                    if driver.complete(*index, reply.timestamp) {
                        ready.push(*index);
                    }
                }
            });
            if !alive {
                return;
            }
            let mut out = Vec::with_capacity(ready.len());
            for index in ready.drain(..) {
                let timestamp = driver.next(index);
                let client = driver.clients[index].id;
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let op = make_op(ops, rng);
                out.push(Submit {
                    source: source_of(client),
                    command: Command { client, timestamp, answered_below: timestamp, op, origin: None },
                });
            }
            let sent = give(&mut output, pulse.send_cap(0), out.into_iter());
            driver.flush();
            if pulse.stopping() {
                pulse.release();
            }
            pulse.end(None, sent);
        }
    });
    submissions
}

fn make_op(ops: Ops, random: u64) -> Vec<u8> {
    use tara::app::coordination::CoordOp;
    match ops {
        Ops::Opaque => vec![7; 64],
        Ops::Coordination => {
            let path = format!("/{}", random % 1000);
            if random & (1 << 40) == 0 {
                CoordOp::SetData { path, data: vec![7; 64], version: None }.encode()
            } else {
                CoordOp::GetData { path }.encode()
            }
        }
    }
}

/// The proposers' and executors' counters that explain a slow run: window stalls, repairs.
fn counters(control: &tara::dataflow::Control) -> String {
    use tara::dataflow::ReplicaStats;
    let get = |stage, replica| control.stats(stage, replica);
    let n = ReplicaStats::get;
    let mut out = String::from("counters:");
    for replica in 0..3 {
        if let Some(c) = get(Stage::Proposer, replica) {
            out.push_str(&format!(
                " proposer {replica}: {} proposals, {} stalls (window full), {} in flight at most, {} repeated;",
                n(&c.count),
                n(&c.stalls),
                n(&c.in_flight_max),
                n(&c.repairs)
            ));
        }
    }
    for replica in 0..3 {
        if let Some(c) = get(Stage::Executor, replica) {
            out.push_str(&format!(" executor {replica}: {} nacks, {} transfers;", n(&c.repairs), n(&c.transfers)));
        }
    }
    out
}
