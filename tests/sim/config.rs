//! What one simulated run looks like, drawn from its seed.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tara::protocol::mutation::Mutation;
use tara::protocol::params::SESSION_TIMEOUT_MIN;
use tara::protocol::{Params, Stage};
use tara::storage::{Action, Op};

/// The share of seeds in which a client's session expires (each fills a session timeout of
/// slots, so costs several ordinary seeds).
const SILENT_SEEDS: f64 = 0.02;

/// A disk fault of one replica: a failpoint in its files, or a flipped bit while it is down.
#[derive(Clone, Debug)]
pub enum DiskFault {
    /// The `after`-th matching operation on the replica's files fails, tears or corrupts.
    Failpoint { stage: Stage, replica: u32, op: Op, action: Action, after: u64 },
    /// At `at_us` the replica crashes, a bit of one of its files flips, and it restarts: it must
    /// refuse to start (or, for checkpoints, skip the damaged one).
    FlipAtRest { stage: Stage, replica: u32, at_us: u64 },
}

/// How the clients' load falls on the partitions (Section IV: a client's commands all go to
/// partition `client % P`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// Consecutive client ids, at least one client per partition: every partition orders.
    Spread,
    /// Every client in partition `partition` (ids `P * n + partition`): the other partitions are
    /// idle, and the merge waits on them until they fill their slots with no-ops.
    Skewed {
        /// The one partition that has clients.
        partition: u32,
    },
}

/// A client that falls silent until its session has ended at the executors, then retransmits:
/// every retransmission must be refused ("session expired"), none executed a second time.
#[derive(Clone, Copy, Debug)]
pub struct Silence {
    /// The client (index) that falls silent: it stops retransmitting and its answers are lost.
    pub client: usize,
    /// It falls silent right after this many of its commands completed (it has some in flight).
    pub after_completed: usize,
    /// The client (index) whose commands fill the log meanwhile, with a window of them in flight.
    pub chatter: usize,
}

/// Everything that shapes one run. All of it derives from the seed (plus an optional mutation).
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed of everything random in the run.
    pub seed: u64,
    /// Protocol parameters (f, window, batching, checkpoint interval, partitions).
    pub params: Params,
    /// Simulated clients.
    pub clients: usize,
    /// Which partitions the clients' commands go to.
    pub load: Load,
    /// Commands each client issues.
    pub commands_per_client: usize,
    /// Commands a client keeps outstanding at once.
    pub outstanding: usize,
    /// Keys the clients read and write (few keys, many conflicts).
    pub keys: usize,
    /// Probability that a tuple is lost (fault phase only).
    pub drop: f64,
    /// Probability that a tuple is delivered twice (fault phase only).
    pub duplicate: f64,
    /// Normal delivery delay range, microseconds.
    pub delay_us: (u64, u64),
    /// Probability of a long delay, which reorders a tuple behind many others (fault phase only).
    pub reorder: f64,
    /// Length of a long delay, microseconds.
    pub long_delay_us: u64,
    /// Network faults and crashes happen before this time only (then partial synchrony).
    pub faults_until_us: u64,
    /// Mean time between crashes during the fault phase (0: no crashes).
    pub crash_every_us: u64,
    /// How long a crashed replica stays down, at most.
    pub downtime_us: u64,
    /// After the fault phase, every outstanding command must complete within this.
    pub liveness_bound_us: u64,
    /// A client retransmits after this long without reply.
    pub retry_us: u64,
    /// The epoch: a replica that received or sent something ticks again this much later.
    pub tick_us: u64,
    /// An idle replica without a deadline ticks after this long (`None`: only at its deadlines,
    /// so that a timer missing from `deadline_us` shows as a stuck run).
    pub idle_tick_us: Option<u64>,
    /// Executors repair (nack, state transfer) after this long without progress.
    pub repair_us: u64,
    /// Cut one replica off the network for a while (every tuple to or from it is lost):
    /// (replica index among all replicas, from, until) in microseconds.
    pub isolate: Option<(usize, u64, u64)>,
    /// A fault of one replica's disk.
    pub disk_fault: Option<DiskFault>,
    /// How long a batch of durable writes takes, microseconds (range).
    pub disk_delay_us: (u64, u64),
    /// A client that goes silent for longer than its session lives (with a small
    /// `session_timeout`).
    pub silence: Option<Silence>,
    /// A deliberate bug to inject.
    pub mutation: Option<Mutation>,
}

impl SimConfig {
    /// The run of `seed`: shapes vary from seed to seed so that many corners get visited.
    ///
    /// The partitioning (P and the load) is drawn from a generator of its own, so that every
    /// other draw of a seed is what it was before partitions existed.
    pub fn from_seed(seed: u64) -> SimConfig {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed_c0f1_9000_0000);
        let mut shape = SmallRng::seed_from_u64(seed ^ 0x9a27_1710_5eed_0000);
        let partitions = shape.random_range(1..=4usize);
        let load = match partitions {
            1 => Load::Spread,
            p if shape.random_bool(0.3) => Load::Skewed { partition: shape.random_range(0..p as u32) },
            _ => Load::Spread,
        };
        let f = if rng.random_bool(0.2) { 2 } else { 1 };
        let window = [4u64, 8, 16, 64][rng.random_range(0..4)];
        let checkpoint_interval = (window / [1u64, 2, 4][rng.random_range(0..3)]).max(1);
        let params = Params {
            f,
            window,
            batch_size: [1usize, 2, 8][rng.random_range(0..3)],
            batch_timeout_us: if rng.random_bool(0.5) { 0 } else { 300 },
            checkpoint_interval,
            client_window: 8,
            view_timeout_us: rng.random_range(20_000..100_000),
            partitions,
            proposer_delay_us: 0,
            // Its own stream, so that the seeds' other choices stay what they were.
            max_in_flight: {
                let mut bound = SmallRng::seed_from_u64(seed ^ 0x0f11_9417_0000_0001);
                bound.random_bool(0.3).then(|| bound.random_range(1..=window))
            },
            ..Params::default()
        };
        let faulty = rng.random_bool(0.9);
        let clients: usize = rng.random_range(1..=4);
        let config = SimConfig {
            seed,
            params: params.clone(),
            clients: if load == Load::Spread { clients.max(partitions) } else { clients },
            load,
            commands_per_client: rng.random_range(5..=30),
            outstanding: if rng.random_bool(0.3) { 2 } else { 1 },
            keys: rng.random_range(1..=4),
            drop: if faulty { rng.random_range(0.0..0.15) } else { 0.0 },
            duplicate: if faulty { rng.random_range(0.0..0.1) } else { 0.0 },
            delay_us: (50, rng.random_range(100..2_000)),
            reorder: if faulty { rng.random_range(0.0..0.05) } else { 0.0 },
            long_delay_us: rng.random_range(5_000..50_000),
            faults_until_us: rng.random_range(50_000..400_000),
            crash_every_us: if faulty && rng.random_bool(0.7) { rng.random_range(10_000..80_000) } else { 0 },
            downtime_us: rng.random_range(5_000..100_000),
            liveness_bound_us: 5_000_000,
            retry_us: rng.random_range(20_000..60_000),
            tick_us: 1_000,
            idle_tick_us: rng.random_bool(0.5).then_some(100_000),
            repair_us: rng.random_range(5_000..20_000),
            isolate: (faulty && rng.random_bool(0.4)).then(|| {
                let from = rng.random_range(0..200_000);
                (rng.random_range(0..64), from, from + rng.random_range(20_000..200_000))
            }),
            disk_fault: (faulty && rng.random_bool(0.25)).then(|| disk_fault(&mut rng, &params)),
            disk_delay_us: (20, rng.random_range(50..1_000)),
            silence: None,
            mutation: None,
        };
        // Its own stream again: a few seeds let a session expire.
        let mut expiry = SmallRng::seed_from_u64(seed ^ 0x5e55_1011_e491_0000);
        if expiry.random_bool(SILENT_SEEDS) { config.with_silence(&mut expiry) } else { config }
    }

    /// The run with a client that goes silent for longer than its session lives: the smallest
    /// `session_timeout`, one command per request (so that the log moves by a slot per command)
    /// and a client that fills the log meanwhile.
    fn with_silence(mut self, rng: &mut SmallRng) -> SimConfig {
        self.params.session_timeout = SESSION_TIMEOUT_MIN;
        self.params.batch_size = 1;
        self.clients = self.clients.max(2);
        self.silence = Some(Silence { client: 0, after_completed: rng.random_range(0..3), chatter: self.clients - 1 });
        // Filling a timeout of slots takes a while of simulated time.
        self.liveness_bound_us = 30_000_000;
        self
    }

    /// The id of client `index`: consecutive ids spread over the partitions, skewed ones all
    /// fall into one.
    pub fn client_id(&self, index: usize) -> u64 {
        let n = 100 + index as u64;
        match self.load {
            Load::Spread => n,
            Load::Skewed { partition } => n * self.params.partitions as u64 + partition as u64,
        }
    }
}

/// A disk fault of a random replica that has durable state.
fn disk_fault(rng: &mut SmallRng, params: &Params) -> DiskFault {
    let stages =
        [Stage::Committer, Stage::Committer, Stage::Executor, Stage::Proposer, Stage::Source, Stage::Controller];
    let stage = stages[rng.random_range(0..stages.len())];
    let replica = rng.random_range(0..stage.replicas(params) as u32);
    if rng.random_bool(0.3) {
        return DiskFault::FlipAtRest { stage, replica, at_us: rng.random_range(20_000..300_000) };
    }
    let (op, action) = [
        (Op::Write, Action::Fail),
        (Op::Sync, Action::Fail),
        (Op::Write, Action::Tear),
        (Op::Write, Action::FailForever),
    ][rng.random_range(0..4)];
    DiskFault::Failpoint { stage, replica, op, action, after: rng.random_range(0..60) }
}
