//! The simulated world: event loop, network, crashes, clients, and the checks.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tara::app::kv::{KvOp, KvResult};
use tara::protocol::merge::{self, Merge};
use tara::protocol::topology::{self, Tuple};
use tara::protocol::{Command, Executed, Outcome as ReplyOutcome, Propose, Reply, Request, Stage, Submit, leader_of};
use tara::storage::{Action, Failpoint, Faulty, MemDisk, replica_dir};

use super::config::{DiskFault, SimConfig};
use super::replicas::{Hosted, ROOT};
use crate::linearizability::{self, Operation};

/// A replica or client of the simulated deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Node {
    Client(u32),
    At(Stage, u32),
}

impl Node {
    pub(super) fn stage(self) -> Option<Stage> {
        match self {
            Node::At(stage, _) => Some(stage),
            Node::Client(_) => None,
        }
    }

    pub(super) fn id(self) -> u32 {
        match self {
            Node::At(_, id) | Node::Client(id) => id,
        }
    }
}

/// A short description of a tuple, for traces.
fn summary(tuple: &Tuple) -> String {
    let id = |r: &Request| format!("req({},{})x{}", r.source, r.number, r.commands.len());
    match tuple {
        Tuple::Command(s) => format!("Command c{} t{} -> r{}", s.command.client, s.command.timestamp, s.source),
        Tuple::Request { view, request } => format!("Request v{view} {}", id(request)),
        Tuple::Propose(p) => format!("Propose s{} v{} {}", p.sequence, p.view, id(&p.request)),
        Tuple::Commit(c) => format!("Commit k{} s{} v{} {}", c.committer, c.sequence, c.view, id(&c.request)),
        Tuple::Reply(r) => format!("Reply e{} c{} t{} {:?}", r.executor, r.client, r.timestamp, r.outcome),
        Tuple::Record(r) => format!("Record k{} v{} stable {} x{}", r.committer, r.view, r.stable, r.records.len()),
        Tuple::Transfer(t) => format!("Transfer e{} -> e{} s{}", t.executor, t.to, t.sequence),
        other => format!("{other:?}"),
    }
}

#[derive(Debug)]
pub(super) enum Event {
    Deliver {
        from: Node,
        to: Node,
        tuple: Tuple,
    },
    Tick(Node),
    Crash,
    Restart(Node),
    Retry {
        client: u32,
        timestamp: u64,
    },
    /// The simulated disk finished a replica's queued writes.
    Flush(Node),
    /// A bit of a replica's files flips while it is down.
    DamageAtRest(Node),
}

/// One line of a node's recent past, formatted only if the run fails (or is traced).
enum Line {
    Text(String),
    Received(Node, Tuple),
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Line::Text(text) => f.write_str(text),
            Line::Received(from, tuple) => write!(f, "<- {from:?} {}", summary(tuple)),
        }
    }
}

/// Why a run failed: which check, when, and what every replica handled last.
#[derive(Debug)]
pub struct Failure {
    /// The seed of the run.
    pub seed: u64,
    /// The run's partitions.
    pub partitions: usize,
    /// The check that failed.
    pub check: &'static str,
    /// Simulated time of the failure, microseconds.
    pub time_us: u64,
    /// What exactly went wrong.
    pub details: String,
    /// The last tuples each node handled.
    pub trace: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} (P = {}) failed check `{}` at {:.3} ms: {}",
            self.seed,
            self.partitions,
            self.check,
            self.time_us as f64 / 1000.0,
            self.details
        )?;
        writeln!(f, "last tuples per node:\n{}", self.trace)?;
        write!(
            f,
            "replay: TARA_SIM_SEED={} TARA_SIM_TRACE=1 cargo test --release --test simulation replay -- --nocapture",
            self.seed
        )
    }
}

/// What a successful run did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Events processed.
    pub events: u64,
    /// Client commands completed.
    pub completed: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Tuples lost on purpose.
    pub dropped: u64,
    /// State transfers that happened.
    pub transfers: u64,
    /// Nacks sent by executors.
    pub nacks: u64,
    /// The highest view reached (in any partition).
    pub views: u64,
    /// View changes: per partition the highest view a commit was made in, summed.
    pub view_changes: u64,
    /// Fill requests executors sent to idle partitions (nacks with `fill`).
    pub fill_asks: u64,
    /// No-ops proposers proposed to fill slots the merge waited for.
    pub filled: u64,
    /// Commits the merges in front of the executors renumbered.
    pub merged: u64,
    /// Replicas stopped by a failed write.
    pub disk_failures: u64,
    /// Replicas that refused to start on damaged durable state.
    pub refusals: u64,
    /// Replicas started with a damaged file at rest.
    pub damaged: u64,
    /// Clients whose session ended while they had commands outstanding ("session expired").
    pub sessions_expired: u64,
    /// A fingerprint of the whole run (for determinism checks).
    pub fingerprint: u64,
    /// Simulated duration, microseconds.
    pub duration_us: u64,
}

pub(super) struct Pending {
    command: Command,
    /// The operation in the history; `None` for the session's opener (a keep-alive).
    history: Option<usize>,
    /// The client's route (`topology::source_of`); a retransmission takes the next one.
    route: u32,
}

pub(super) struct Client {
    pub(super) id: u64,
    /// The opener (a keep-alive at timestamp 1) was answered: commands go out.
    open: bool,
    /// Its commands acknowledge answers (`answered_below`), as the library's do; a silent client's
    /// claim none (0, as `Command::new` builds them), the case an opening rule must get right.
    claims: bool,
    /// Silent: it retransmits nothing and its answers are lost (see `config::Silence`).
    silent: bool,
    /// It fell silent once already (it does so once per run).
    fell_silent: bool,
    /// Its session ended ("session expired"): it sends nothing more.
    expired: bool,
    /// Commands whose outcome is unknown: outstanding when the session ended.
    unknown: Vec<u64>,
    completed: usize,
    next_timestamp: u64,
    issued: usize,
    pending: BTreeMap<u64, Pending>,
}

impl Client {
    fn answered_below(&self) -> u64 {
        self.pending.keys().next().copied().unwrap_or(self.next_timestamp)
    }

    /// What its next command or retransmission claims.
    fn claim(&self) -> u64 {
        if self.claims { self.answered_below() } else { 0 }
    }
}

/// The global view the checks keep across replicas.
#[derive(Default)]
struct Checks {
    /// (sequence, index) -> (client, timestamp, result): what was executed where.
    decided: BTreeMap<(u64, u32), (u64, u64, Vec<u8>)>,
    /// (client, timestamp) -> (sequence, index): where each command was executed.
    position: HashMap<(u64, u64), (u64, u32)>,
    /// next -> history chain of the executors that reached it.
    history_at: HashMap<u64, u64>,
    /// (partition, view, sequence) -> request id proposed.
    proposals: HashMap<(u32, u64, u64), (u32, u64)>,
    /// Per partition: the highest view a commit was made in.
    commit_views: Vec<u64>,
    /// client -> the highest execution slot one of its commands executed at.
    last_slot: HashMap<u64, u64>,
}

pub(super) struct World {
    pub(super) config: SimConfig,
    pub(super) rng: SmallRng,
    pub(super) now: u64,
    /// Events scheduled so far (ties in time go in scheduling order).
    order: u64,
    /// (time, order, slot in `events`) of every scheduled event, the earliest first.
    queue: BinaryHeap<Reverse<(u64, u64, u32)>>,
    /// The scheduled events, in slots that are reused once their event ran.
    events: Vec<Option<Event>>,
    free: Vec<u32>,
    /// Every replica, stage by stage in dataflow order.
    hosted: Vec<Hosted>,
    /// Where each stage's replicas start in `hosted`.
    offsets: [usize; 6],
    /// The merge in front of the executors (Section IV), as the dataflow's `Merge` operator.
    merge: Merge,
    /// The replica the run cuts off the network for a while.
    isolated: Option<Node>,
    /// The disk every replica's durable state is on, with the run's failpoint.
    pub(super) disk: Faulty<MemDisk>,
    /// The run's disk fault kills the disk for good.
    pub(super) disk_dead: bool,
    pub(super) clients: Vec<Client>,
    history: Vec<Operation>,
    checks: Checks,
    /// Per node (clients first, then the replicas as in `hosted`), what it handled last.
    recent: Vec<VecDeque<(u64, Line)>>,
    trace: bool,
    pub(super) outcome: Outcome,
}

/// Runs one simulated deployment to the end and checks it.
pub fn run(config: SimConfig, trace: bool) -> Result<Outcome, Failure> {
    let mut world = World::new(config, trace);
    world.start();
    let result = world.main_loop().and_then(|()| world.final_checks());
    world.outcome.duration_us = world.now;
    match result {
        Ok(()) => Ok(world.outcome),
        Err((check, details)) => Err(world.failure(check, details)),
    }
}

pub(super) type Check = Result<(), (&'static str, String)>;

impl World {
    fn new(config: SimConfig, trace: bool) -> World {
        let p = config.params.clone();
        let mut offsets = [0; 6];
        let mut total = 0;
        for stage in Stage::ALL {
            offsets[stage.index()] = total;
            total += stage.replicas(&p);
        }
        let disk = Faulty::new(MemDisk::new());
        let mut disk_dead = false;
        if let Some(DiskFault::Failpoint { stage, replica, op, action, after }) = &config.disk_fault
            && let Some(dir) = replica_dir(std::path::Path::new(ROOT), *stage, *replica)
        {
            disk.arm(Failpoint::new(&format!("{}/", dir.display()), *op, *after, *action));
            disk_dead = *action == Action::FailForever;
        }
        World {
            rng: SmallRng::seed_from_u64(config.seed),
            now: 0,
            order: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            free: Vec::new(),
            hosted: (0..total).map(|_| Hosted::empty()).collect(),
            offsets,
            merge: Merge::new(&p),
            isolated: None,
            disk,
            disk_dead,
            clients: (0..config.clients)
                .map(|i| Client {
                    id: config.client_id(i),
                    open: false,
                    claims: config.silence.is_none_or(|s| s.client != i),
                    silent: false,
                    fell_silent: false,
                    expired: false,
                    unknown: Vec::new(),
                    completed: 0,
                    next_timestamp: 1,
                    issued: 0,
                    pending: BTreeMap::new(),
                })
                .collect(),
            history: Vec::new(),
            checks: Checks { commit_views: vec![0; p.partitions], ..Checks::default() },
            recent: (0..config.clients + total).map(|_| VecDeque::new()).collect(),
            trace,
            outcome: Outcome::default(),
            config,
        }
    }

    pub(super) fn schedule(&mut self, at: u64, event: Event) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.events[slot as usize] = Some(event);
                slot
            }
            None => {
                self.events.push(Some(event));
                self.events.len() as u32 - 1
            }
        };
        self.queue.push(Reverse((at, self.order, slot)));
        self.order += 1;
    }

    /// Every replica, in a fixed order.
    pub(super) fn nodes(&self) -> Vec<Node> {
        let p = &self.config.params;
        Stage::ALL
            .into_iter()
            .flat_map(|stage| (0..stage.replicas(p) as u32).map(move |id| Node::At(stage, id)))
            .collect()
    }

    /// The slot of a replica.
    pub(super) fn slot(&mut self, node: Node) -> &mut Hosted {
        let index = match node {
            Node::At(stage, id) => self.offsets[stage.index()] + id as usize,
            Node::Client(_) => unreachable!("clients have no slot"),
        };
        &mut self.hosted[index]
    }

    fn executor_positions(&mut self) -> Vec<Option<(u64, u64)>> {
        (0..self.config.params.executors() as u32)
            .filter_map(|e| {
                let slot = self.slot(Node::At(Stage::Executor, e));
                if slot.broken {
                    return None;
                }
                Some(slot.replica.as_ref().map(|r| (r.counters().next, r.counters().history)))
            })
            .collect()
    }

    fn start(&mut self) {
        let nodes = self.nodes();
        self.isolated = self.config.isolate.map(|(index, _, _)| nodes[index % nodes.len()]);
        for node in self.nodes() {
            self.start_replica(node);
        }
        if let Some(DiskFault::FlipAtRest { stage, replica, at_us }) = self.config.disk_fault.clone() {
            self.schedule(at_us, Event::DamageAtRest(Node::At(stage, replica)));
        }
        for client in 0..self.clients.len() as u32 {
            self.open(client);
        }
        if self.config.crash_every_us > 0 {
            let at = self.rng.random_range(0..2 * self.config.crash_every_us);
            self.schedule(at, Event::Crash);
        }
    }

    /// The clients are done and every executor is up, at the same position, with the same
    /// history: replicas must converge even when no more load arrives.
    /// Executors whose durable state is broken for good are left out.
    fn done(&mut self) -> bool {
        let quota = self.config.commands_per_client;
        let clients = self.clients.iter().all(|c| c.expired || (c.issued >= quota && c.pending.is_empty()));
        if !clients {
            return false;
        }
        let positions = self.executor_positions();
        positions.iter().all(|p| p.is_some() && *p == positions[0])
    }

    fn main_loop(&mut self) -> Check {
        let deadline = self.config.faults_until_us + self.config.liveness_bound_us;
        while let Some(Reverse((at, order, slot))) = self.queue.pop() {
            let event = self.events[slot as usize].take().expect("a scheduled event");
            self.free.push(slot);
            self.now = at;
            if self.now > deadline {
                return Err(self.stuck());
            }
            self.outcome.events += 1;
            self.outcome.fingerprint = mix(self.outcome.fingerprint, at ^ order.rotate_left(32));
            self.handle(event)?;
            if self.done() {
                return Ok(());
            }
        }
        Err(("liveness", "the simulation ran out of events".into()))
    }

    fn stuck(&mut self) -> (&'static str, String) {
        let pending: Vec<String> =
            self.clients.iter().flat_map(|c| c.pending.keys().map(move |t| format!("c{} t{}", c.id, t))).collect();
        if pending.is_empty() {
            let positions = self.executor_positions();
            return ("convergence", format!("executors did not converge after the fault phase: {positions:?}"));
        }
        ("liveness", format!("commands still outstanding after the fault phase: {pending:?}"))
    }

    fn handle(&mut self, event: Event) -> Check {
        match event {
            Event::Deliver { from, to, tuple } => self.deliver(from, to, tuple),
            Event::Tick(node) => {
                let now = self.now;
                if self.slot(node).tick_at != Some(now) {
                    return Ok(()); // superseded by a sooner tick
                }
                self.slot(node).tick_at = None;
                self.step(node, None)
            }
            Event::Flush(node) => self.flush(node),
            Event::DamageAtRest(node) => {
                self.damage_at_rest(node);
                Ok(())
            }
            Event::Crash => {
                self.crash_someone();
                Ok(())
            }
            Event::Restart(node) => {
                self.restart(node);
                Ok(())
            }
            Event::Retry { client, timestamp } => {
                self.retry(client, timestamp);
                Ok(())
            }
        }
    }

    pub(super) fn note(&mut self, node: Node, line: String) {
        self.remember(node, Line::Text(line));
    }

    fn remember(&mut self, node: Node, line: Line) {
        if self.trace {
            eprintln!("{:>10.3} ms  {:?}  {}", self.now as f64 / 1000.0, node, line);
        }
        let index = match node {
            Node::Client(c) => c as usize,
            Node::At(stage, id) => self.clients.len() + self.offsets[stage.index()] + id as usize,
        };
        let recent = &mut self.recent[index];
        if recent.len() == 12 {
            recent.pop_front();
        }
        recent.push_back((self.now, line));
    }

    fn failure(&self, check: &'static str, details: String) -> Failure {
        let nodes = (0..self.clients.len() as u32).map(Node::Client).chain(self.nodes());
        let trace = nodes
            .zip(&self.recent)
            .filter(|(_, lines)| !lines.is_empty())
            .map(|(node, lines)| {
                let lines: Vec<String> =
                    lines.iter().map(|(at, l)| format!("    {:.3}ms {l}", *at as f64 / 1000.0)).collect();
                format!("  {node:?}:\n{}", lines.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let (seed, partitions) = (self.config.seed, self.config.params.partitions);
        Failure { seed, partitions, check, time_us: self.now, details, trace }
    }

    // ---- network ----

    pub(super) fn faulty(&self) -> bool {
        self.now < self.config.faults_until_us
    }

    /// True if `node` is cut off the network right now.
    fn isolated(&self, node: Node) -> bool {
        let Some((_, from, until)) = self.config.isolate else { return false };
        self.isolated == Some(node) && self.now >= from && self.now < until && self.faulty()
    }

    pub(super) fn send(&mut self, from: Node, to: Node, tuple: Tuple) {
        let cut = self.isolated(from) || self.isolated(to);
        if cut || (self.faulty() && self.rng.random_bool(self.config.drop)) {
            self.outcome.dropped += 1;
            if self.trace {
                self.note(from, format!("DROPPED -> {to:?} {}", summary(&tuple)));
            }
            return;
        }
        let copies = if self.faulty() && self.rng.random_bool(self.config.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let (low, high) = self.config.delay_us;
            let mut delay = self.rng.random_range(low..=high);
            if self.faulty() && self.rng.random_bool(self.config.reorder) {
                delay += self.config.long_delay_us;
            }
            self.schedule(self.now + delay, Event::Deliver { from, to, tuple: tuple.clone() });
        }
    }

    fn deliver(&mut self, from: Node, to: Node, tuple: Tuple) -> Check {
        if self.down(to) {
            return Ok(());
        }
        let tuple = match (to.stage(), tuple) {
            (Some(Stage::Executor), Tuple::Commit(commit)) => self.merged(commit)?,
            (_, tuple) => tuple,
        };
        self.remember(to, Line::Received(from, tuple.clone()));
        match (to, tuple) {
            (Node::Client(c), Tuple::Reply(reply)) => self.on_reply(c, reply),
            (Node::Client(c), other) => Err(("routing", format!("client {c} got {other:?}"))),
            (node, tuple) => self.step(node, Some(tuple)),
        }
    }

    /// A commit on its way into an executor passes the merge, as in the dataflow: partition
    /// `i`'s slot `s` becomes execution slot `s * P + i`, its committer its index in `i`.
    fn merged(&mut self, commit: tara::protocol::Commit) -> Result<Tuple, (&'static str, String)> {
        let committer = commit.committer;
        let merged = self.merge.commit(commit);
        let merged =
            merged.ok_or_else(|| ("routing", format!("the merge has no partition for committer {committer}")))?;
        self.outcome.merged = self.merge.merged();
        Ok(Tuple::Commit(merged))
    }

    // ---- crashes ----

    pub(super) fn down(&mut self, node: Node) -> bool {
        match node {
            Node::Client(_) => false,
            node => self.slot(node).replica.is_none(),
        }
    }

    /// Crashes a random replica of any stage, the active proposer included, if its stage has
    /// fewer than f replicas down (broken ones included) in the victim's partition.
    fn crash_someone(&mut self) {
        if !self.faulty() {
            return;
        }
        let next = self.now + self.rng.random_range(1..=2 * self.config.crash_every_us);
        self.schedule(next, Event::Crash);
        let nodes = self.nodes();
        let victim = nodes[self.rng.random_range(0..nodes.len())];
        if !self.may_crash(victim) {
            return;
        }
        self.crash_replica(victim);
        self.outcome.crashes += 1;
        self.note(victim, "CRASHED".into());
        let back = self.now + self.rng.random_range(1..=self.config.downtime_us);
        self.schedule(back, Event::Restart(victim));
    }

    /// True if `victim` is up and its stage has fewer than f replicas down in its partition
    /// (each partition's group of a stage tolerates f crashes, Section IV; a shared stage is one
    /// group).
    fn may_crash(&mut self, victim: Node) -> bool {
        let group = |world: &World, node: Node| node.stage().map(|stage| (stage, world.partition_of(node)));
        let peers: Vec<Node> = self.nodes().into_iter().filter(|n| group(self, *n) == group(self, victim)).collect();
        let down = peers.into_iter().filter(|n| self.down(*n)).count();
        !self.down(victim) && down < self.config.params.f
    }

    /// The partition of a replica (0 for the shared stages).
    pub(super) fn partition_of(&self, node: Node) -> u32 {
        match node {
            Node::At(stage, id) => topology::locate(stage, id, &self.config.params).0,
            Node::Client(_) => 0,
        }
    }

    /// Restarts a replica with its durable state only: an executor reloads its newest
    /// checkpoint, a committer replays its record log, and so on, through the storage layer.
    fn restart(&mut self, node: Node) {
        if !self.slot(node).broken {
            self.start_replica(node);
        }
    }

    /// Crashes a replica, flips a bit of one of its files, and restarts it later: it must
    /// refuse to start (a checkpoint is only skipped).
    fn damage_at_rest(&mut self, node: Node) {
        if !self.may_crash(node) {
            return;
        }
        let Some(dir) = node.stage().and_then(|stage| replica_dir(std::path::Path::new(ROOT), stage, node.id())) else {
            return;
        };
        self.crash_replica(node);
        let memory = self.disk.inner().clone();
        let files: Vec<std::path::PathBuf> = memory.paths().into_iter().filter(|p| p.starts_with(&dir)).collect();
        if !files.is_empty() {
            let file = &files[self.rng.random_range(0..files.len())];
            let length = memory.len_of(file).unwrap_or(0);
            if length > 0 {
                let (offset, bit) = (self.rng.random_range(0..length), self.rng.random_range(0..8));
                memory.flip_bit(file, offset, bit);
                self.outcome.damaged += 1;
                self.note(node, format!("DAMAGED {} at byte {offset}", file.display()));
            }
        }
        let back = self.now + self.rng.random_range(1..=self.config.downtime_us);
        self.schedule(back, Event::Restart(node));
    }

    // ---- clients ----

    /// Opens the client's session as the library's clients do: a keep-alive at timestamp 1,
    /// whose answer the client waits for before it sends its commands.
    fn open(&mut self, client: u32) {
        let c = &mut self.clients[client as usize];
        let command = Command::open(c.id);
        let (timestamp, route) = (command.timestamp, (c.id + command.timestamp) as u32);
        c.next_timestamp = timestamp + 1;
        c.pending.insert(timestamp, Pending { command: command.clone(), history: None, route });
        let source = topology::source_of(c.id, route, &self.config.params);
        self.send(Node::Client(client), Node::At(Stage::Source, source), Tuple::Command(Submit { source, command }));
        self.schedule(self.now + self.config.retry_us, Event::Retry { client, timestamp });
    }

    fn issue(&mut self, client: u32) {
        let keys = self.config.keys;
        let window = self.config.params.client_window;
        let filling = self.filling(client);
        let c = &mut self.clients[client as usize];
        let full = c.next_timestamp >= c.answered_below() + window;
        if !c.open || c.expired || (c.issued >= self.config.commands_per_client && !filling) || full {
            return;
        }
        c.issued += 1;
        let timestamp = c.next_timestamp;
        let answered_below = c.claim();
        c.next_timestamp += 1;
        let key = format!("k{}", self.rng.random_range(0..keys));
        let op = match self.rng.random_range(0..10) {
            0..=4 => KvOp::Put { key, value: format!("{}:{timestamp}", self.clients[client as usize].id).into_bytes() },
            5..=8 => KvOp::Get { key },
            _ => KvOp::Delete { key },
        };
        let c = &mut self.clients[client as usize];
        let command = Command { client: c.id, timestamp, answered_below, op: op.encode(), origin: None };
        let route = (c.id + timestamp) as u32;
        let source = topology::source_of(c.id, route, &self.config.params);
        self.history.push(Operation { client: c.id, invoke: self.now, response: None, op, result: None });
        let history = self.history.len() - 1;
        let c = &mut self.clients[client as usize];
        c.pending.insert(timestamp, Pending { command: command.clone(), history: Some(history), route });
        self.send(Node::Client(client), Node::At(Stage::Source, source), Tuple::Command(Submit { source, command }));
        self.schedule(self.now + self.config.retry_us, Event::Retry { client, timestamp });
    }

    /// True while `client` is the run's chatter and the silent client has not come back: it
    /// keeps commands coming, beyond its quota, so that the log moves on.
    fn filling(&self, client: u32) -> bool {
        let Some(silence) = self.config.silence else { return false };
        let silent = &self.clients[silence.client];
        silence.chatter == client as usize && !silent.expired && (silent.silent || !silent.fell_silent)
    }

    /// Commands a client keeps in flight: the chatter a window's worth, to fill slots fast.
    fn in_flight(&self, client: u32) -> usize {
        if self.filling(client) { self.config.params.client_window as usize } else { self.config.outstanding }
    }

    /// A silent client comes back once every executor is a timeout of slots past the client's
    /// latest executed command: its session has ended, unless a copy still on its way marked it
    /// active later (then the session lives on and the client is simply answered). A command
    /// lost on the way never executed; after the session it is refused, and its outcome unknown.
    fn may_come_back(&mut self, client: u32) -> bool {
        let id = self.clients[client as usize].id;
        let Some(last) = self.checks.last_slot.get(&id).copied() else { return false };
        let ended = last + self.config.params.session_timeout;
        self.executor_positions().iter().flatten().all(|(next, _)| *next > ended)
    }

    fn retry(&mut self, client: u32, timestamp: u64) {
        if self.clients[client as usize].silent {
            if !self.may_come_back(client) {
                self.schedule(self.now + self.config.retry_us, Event::Retry { client, timestamp });
                return;
            }
            self.clients[client as usize].silent = false;
            self.note(Node::Client(client), "COMES BACK after its session ended".into());
        }
        let c = &mut self.clients[client as usize];
        let (id, answered_below) = (c.id, c.claim());
        let Some(pending) = c.pending.get_mut(&timestamp) else { return };
        pending.route = pending.route.wrapping_add(1);
        pending.command.answered_below = answered_below;
        let (route, command) = (pending.route, pending.command.clone());
        let source = topology::source_of(id, route, &self.config.params);
        self.send(Node::Client(client), Node::At(Stage::Source, source), Tuple::Command(Submit { source, command }));
        self.schedule(self.now + self.config.retry_us, Event::Retry { client, timestamp });
    }

    fn on_reply(&mut self, client: u32, reply: Reply) -> Check {
        let c = &mut self.clients[client as usize];
        if c.silent || !c.pending.contains_key(&reply.timestamp) {
            return Ok(()); // a silent client's answers are lost
        }
        if reply.outcome == ReplyOutcome::SessionExpired {
            // As the library does: every outstanding command's outcome is unknown (each ran at
            // most once, which the exactly-once check verifies), and none is sent again.
            c.expired = true;
            c.unknown = std::mem::take(&mut c.pending).into_keys().collect();
            self.outcome.sessions_expired += 1;
            let line = format!("SESSION EXPIRED: outcome of {:?} unknown", c.unknown);
            self.note(Node::Client(client), line);
            return Ok(());
        }
        let Some(pending) = c.pending.remove(&reply.timestamp) else { return Ok(()) };
        if reply.outcome == ReplyOutcome::Expired {
            return Err((
                "exactly-once",
                format!("client {} got Expired for t{} it still waited for", c.id, reply.timestamp),
            ));
        }
        match pending.history {
            None => c.open = true,
            Some(history) => {
                let result = KvResult::decode(&reply.result).map_err(|e| ("reply", e))?;
                let operation = &mut self.history[history];
                operation.response = Some(self.now);
                operation.result = Some(result);
                self.outcome.completed += 1;
                self.clients[client as usize].completed += 1;
            }
        }
        // Closed loop: keep `outstanding` commands in flight, as far as the window allows.
        while self.clients[client as usize].pending.len() < self.in_flight(client) {
            let issued = self.clients[client as usize].issued;
            self.issue(client);
            if self.clients[client as usize].issued == issued {
                break;
            }
        }
        let silence = self.config.silence.filter(|s| s.client == client as usize);
        let c = &mut self.clients[client as usize];
        if silence.is_some_and(|s| !c.fell_silent && c.completed == s.after_completed && !c.pending.is_empty()) {
            (c.silent, c.fell_silent) = (true, true);
            self.note(Node::Client(client), "FALLS SILENT".into());
        }
        Ok(())
    }

    // ---- checks ----

    /// Safety (Section III-C): in view v of a partition only that partition's proposer
    /// v mod (f+1) proposes, and it proposes one request per sequence number; a request comes
    /// from a source of the same partition (or is a no-op).
    pub(super) fn check_proposal(&mut self, propose: &Propose) -> Check {
        let p = &self.config.params;
        let (partition, local) = topology::locate(Stage::Proposer, propose.proposer, p);
        if local != leader_of(propose.view, p.proposers()) {
            return Err((
                "one proposer per view",
                format!("proposer {} (partition {partition}) proposed in view {}", propose.proposer, propose.view),
            ));
        }
        let request = &propose.request;
        if !request.is_noop() && topology::locate(Stage::Source, request.source, p).0 != partition {
            return Err((
                "partition",
                format!("proposer {} of partition {partition} proposed {:?}", propose.proposer, request.id()),
            ));
        }
        let id = request.id();
        let first = *self.checks.proposals.entry((partition, propose.view, propose.sequence)).or_insert(id);
        if first != id {
            return Err((
                "one proposal per slot",
                format!(
                    "partition {partition} s{} v{} proposed as {first:?} and as {id:?}",
                    propose.sequence, propose.view
                ),
            ));
        }
        Ok(())
    }

    /// Safety: executors agree on what was executed at each position (a sequence number never
    /// changes once committed, across view changes too), and a command executes at one
    /// position only.
    pub(super) fn check_executed(&mut self, x: Executed) -> Check {
        let p = &self.config.params;
        let (partition, _) = merge::slot_of(x.sequence, p.partitions);
        let expected = topology::partition_of_client(x.command.client, p);
        if partition != expected {
            return Err((
                "merge",
                format!(
                    "executor {} executed client {}'s t{} at s{} of partition {partition}, not of {expected}",
                    x.executor, x.command.client, x.command.timestamp, x.sequence
                ),
            ));
        }
        let position = (x.sequence, x.index);
        let entry = (x.command.client, x.command.timestamp, x.result.clone());
        if let Some(first) = self.checks.decided.get(&position) {
            if *first != entry {
                return Err((
                    "agreement",
                    format!(
                        "executor {} executed {:?} at {position:?} where another executed {:?}",
                        x.executor, entry, first
                    ),
                ));
            }
        } else {
            self.checks.decided.insert(position, entry);
        }
        let last = self.checks.last_slot.entry(x.command.client).or_insert(x.sequence);
        *last = (*last).max(x.sequence);
        let command = (x.command.client, x.command.timestamp);
        let at = *self.checks.position.entry(command).or_insert(position);
        if at != position {
            return Err(("exactly-once", format!("command {command:?} executed at {at:?} and again at {position:?}")));
        }
        Ok(())
    }

    /// Safety: executors that reached the same sequence number executed the same history.
    pub(super) fn check_history(&mut self, executor: u32, next: u64, history: u64) -> Check {
        let first = *self.checks.history_at.entry(next).or_insert(history);
        if first != history {
            return Err(("digests agree", format!("executor {executor} reached s{next} with a different history")));
        }
        Ok(())
    }

    /// The view a commit was made in: the partition's view changes that completed.
    pub(super) fn note_commit_view(&mut self, commit: &tara::protocol::Commit) {
        let (partition, _) = topology::locate(Stage::Committer, commit.committer, &self.config.params);
        let view = &mut self.checks.commit_views[partition as usize];
        *view = (*view).max(commit.view);
    }

    fn final_checks(&mut self) -> Check {
        for node in self.nodes() {
            self.count_final(node);
        }
        self.outcome.view_changes = self.checks.commit_views.iter().sum();
        for c in &self.clients {
            for timestamp in 1..c.next_timestamp {
                if !self.checks.position.contains_key(&(c.id, timestamp)) && !c.unknown.contains(&timestamp) {
                    return Err((
                        "exactly-once",
                        format!("client {} command t{timestamp} was answered but never executed", c.id),
                    ));
                }
            }
        }
        linearizability::check(&self.history).map_err(|e| ("linearizability", e))
    }
}

fn mix(a: u64, b: u64) -> u64 {
    (a ^ b).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
}
