//! The executor stage (Sections III-C and III-D): commits, executes in order, checkpoints.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::client_table::{self, ClientTable, FIRST_TIMESTAMP, Verdict};
use super::frame;
use super::merge;
use super::mutation::{self, Mutation};
use super::params::Params;
use super::quorum::Announced;
use super::replica::{Counters, Outbox, Recovered, Repeat, Replica};
use super::topology::{Stage, Tuple};
use super::tuple::{
    Actual, Checkpoint, Command, Commit, Executed, Fetch, Nack, Outcome, Reply, Request, Stable, Transfer, View,
};
use super::window::Window;
use crate::app::{Application, digest_bytes, digest_extend};

/// Unanswered nacks after which a stuck executor asks a peer for its state instead.
const NACKS_BEFORE_FETCH: u64 = 3;

/// Checkpoints kept in memory per executor: the newest two, so that one is always complete
/// while the next is being taken.
const CHECKPOINTS_KEPT: usize = 2;

/// A checkpoint to make durable (host duty: the announcement that the executor emits with it
/// waits until it is stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    /// The executor replica whose checkpoint it is.
    pub executor: u32,
    /// The checkpoint covers every sequence number below this one.
    pub sequence: u64,
    /// The framed checkpoint ([`frame`]).
    pub state: Arc<Vec<u8>>,
}

/// Votes for one sequence number in one view.
#[derive(Clone, Debug)]
struct Slot {
    view: u64,
    /// Bit k is set once committer k's commit arrived.
    votes: u64,
    request: Request,
}

/// What a checkpoint holds (Section III-D): the application snapshot, the per-client executed
/// timestamps and the reply cache, plus the executor's own counters so that a replica restored
/// from it reports the same history as one that executed everything.
#[derive(Deserialize)]
struct CheckpointState {
    sequence: u64,
    history: u64,
    executed: u64,
    agreed: Vec<u64>,
    clients: ClientTable,
    app: Vec<u8>,
}

/// [`CheckpointState`] by reference, so that taking a checkpoint copies nothing but the bytes.
#[derive(Serialize)]
struct CheckpointRef<'a> {
    sequence: u64,
    history: u64,
    executed: u64,
    agreed: &'a [u64],
    clients: &'a ClientTable,
    app: &'a [u8],
}

/// A lagging executor's state-transfer attempt.
#[derive(Debug)]
struct Fetching {
    peer: u32,
    sent_us: u64,
}

/// Executor replica `e` (2f+1 of them), holding one instance of the application.
///
/// Sequence numbers are execution slots: with P partitions, the merge in front of the executor
/// renumbered partition `i`'s slot `s_i` to `s_i * P + i` ([`merge`], Section IV). An execution
/// slot commits once f+1 distinct committers of its partition sent a commit for it in the view
/// the executor is in for that partition (Section III-C). When the next slot to execute belongs
/// to a partition that has not proposed it while others are ahead, the executor asks that
/// partition to fill its slots with no-ops ([`Nack::fill`]). Committed requests execute strictly in sequence order, with
/// duplicate detection per client. Before executing `s` with `s mod CP == 0` the executor takes a
/// checkpoint and announces it (Section III-D). An executor that falls behind the stability
/// threshold and stops making progress fetches a peer's checkpoint and continues from there.
pub struct Executor<A: Application> {
    id: u32,
    executors: u32,
    quorum: u32,
    checkpoint_interval: u64,
    repair_timeout_us: u64,
    emit_executed: bool,
    partitions: usize,
    controllers: usize,
    /// Per partition: the view the executor is in, and the controllers' announcements.
    view: Vec<u64>,
    views: Vec<Announced>,
    /// One above the highest committed slot held.
    committed_top: u64,
    /// Per partition: the highest slot it was asked to fill, and when.
    fill_asked: Vec<(u64, u64)>,
    fills_sent: u64,
    /// The most execution slots committed beyond the next one while it waited (how far the
    /// slowest partition held the others back in the merge).
    lag_max: u64,
    stable: Announced,
    /// Per request source: the highest request number executed (the paper's vector q⃗).
    agreed: Vec<u64>,
    next: u64,
    slots: Window<Slot>,
    app: A,
    clients: ClientTable,
    checkpoints: VecDeque<(u64, Arc<Vec<u8>>)>,
    /// The newest checkpoint announced (its store goes out with the announcement, which the
    /// host releases once the store is durable).
    durable: Option<u64>,
    history: u64,
    executed: u64,
    stalled_at: u64,
    stalled_since_us: u64,
    was_idle: bool,
    fetching: Option<Fetching>,
    nacked_us: u64,
    /// Repeats of the newest durable checkpoint to the garbage-collection sources.
    announce: Repeat,
    /// Progress reports: at the report interval while progress changes, backing off while not.
    report: Repeat,
    /// Votes that completed a commit (the reports' change key).
    commits_seen: u64,
    transfers_restored: u64,
    nacks_sent: u64,
    /// Nacks sent when the current stall began.
    nacks_at_stall: u64,
    mutation: Option<Mutation>,
}

impl<A: Application> Executor<A> {
    /// Executor replica `id` of a deployment with `params`, executing on `app`.
    pub fn new(id: u32, params: &Params, app: A) -> Executor<A> {
        Executor {
            id,
            executors: params.executors() as u32,
            quorum: params.quorum() as u32,
            // Every `checkpoint_interval` slots of each partition (Section IV keeps the window
            // per partition, so the threshold must move by as much in each).
            checkpoint_interval: params.checkpoint_interval * params.partitions as u64,
            repair_timeout_us: 20_000,
            emit_executed: false,
            partitions: params.partitions,
            controllers: params.controllers(),
            view: vec![0; params.partitions],
            views: vec![Announced::new(params.controllers(), params.quorum(), 0); params.partitions],
            committed_top: 0,
            fill_asked: vec![(0, 0); params.partitions],
            fills_sent: 0,
            lag_max: 0,
            stable: Announced::new(params.gc_sources(), params.quorum(), 0),
            agreed: vec![0; Stage::Source.replicas(params)],
            next: 0,
            // Each partition may run `window` slots ahead of the threshold in its own numbering.
            slots: Window::new(0, 2 * params.window * params.partitions as u64),
            app,
            clients: ClientTable::new(params.client_window, params.max_sessions, params.session_timeout),
            checkpoints: VecDeque::new(),
            durable: None,
            history: digest_bytes(b"tara"),
            executed: 0,
            stalled_at: 0,
            stalled_since_us: 0,
            was_idle: true,
            fetching: None,
            nacked_us: 0,
            announce: Repeat::new(100_000),
            report: Repeat::new(params.report_interval_us()),
            commits_seen: 0,
            transfers_restored: 0,
            nacks_sent: 0,
            nacks_at_stall: 0,
            mutation: None,
        }
    }

    /// Emit an [`Executed`] tuple for every executed command (off by default: it costs copies).
    pub fn emit_executed(mut self, emit: bool) -> Self {
        self.emit_executed = emit;
        self
    }

    /// How long an executor waits without progress before it repairs: fetching a checkpoint
    /// when it is behind the threshold, asking for a proposal again when a gap holds it up; and
    /// the pause between attempts.
    pub fn repair_timeout_us(mut self, timeout_us: u64) -> Self {
        self.repair_timeout_us = timeout_us;
        self
    }

    /// Nacks sent so far.
    pub fn nacks_sent(&self) -> u64 {
        self.nacks_sent
    }

    /// Breaks this replica on purpose (tests of the simulator only).
    #[cfg(feature = "mutations")]
    pub fn mutate(mut self, mutation: Mutation) -> Self {
        self.mutation = Some(mutation);
        self
    }

    fn mutated(&self, mutation: Mutation) -> bool {
        mutation::applies(self.mutation, mutation)
    }

    /// This replica's index.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The newest checkpoint announced.
    pub fn durable(&self) -> Option<u64> {
        self.durable
    }

    /// The next sequence number to execute: everything below it has been executed.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Commands executed (not counting duplicates answered from the cache).
    pub fn executed(&self) -> u64 {
        self.executed
    }

    /// A hash chain over every executed command and its result, in order: two replicas with
    /// the same `next` and `history` executed the same sequence with the same results.
    pub fn history(&self) -> u64 {
        self.history
    }

    /// A digest of the application state and the duplicate-detection table.
    pub fn state_digest(&self) -> u64 {
        let hash = digest_extend(digest_bytes(&self.app.digest().to_le_bytes()), &self.clients.digest().to_le_bytes());
        digest_extend(hash, &self.next.to_le_bytes())
    }

    /// The stability threshold this replica adopted.
    pub fn stable(&self) -> u64 {
        self.stable.adopted()
    }

    /// Slots held in the window plus results held for duplicate detection (state, for bounds).
    pub fn held(&self) -> usize {
        self.slots.occupied() + self.clients.results_held()
    }

    /// Live client sessions in the duplicate-detection table (at most `max_sessions`).
    pub fn sessions(&self) -> usize {
        self.clients.clients()
    }

    /// Client sessions ended so far (by timeout or to stay within `max_sessions`), counting
    /// those ended before the checkpoint this replica restored.
    pub fn sessions_ended(&self) -> u64 {
        self.clients.ended_total()
    }

    /// True if `client` has a live session at this replica.
    pub fn has_session(&self, client: u64) -> bool {
        self.clients.has_session(client)
    }

    /// Times this replica caught up by restoring a peer's checkpoint.
    pub fn transfers_restored(&self) -> u64 {
        self.transfers_restored
    }

    /// The application instance (read only).
    pub fn app(&self) -> &A {
        &self.app
    }

    /// A commit (in execution numbering, from the merge): counted if it is for the executor's
    /// view of its partition; executes whatever became ready.
    pub fn on_commit(&mut self, commit: Commit, out: &mut Outbox) {
        let (partition, _) = merge::slot_of(commit.sequence, self.partitions);
        let view = &mut self.view[partition as usize];
        // A committer is in a view only once f+1 controllers announced it: a commit of a
        // higher view proves that view, even if this executor missed the announcements.
        *view = (*view).max(commit.view);
        if commit.view != *view || commit.committer >= 64 || commit.sequence < self.next {
            return;
        }
        let view = *view;
        let Some(slot) =
            self.slots.get_or_insert_with(commit.sequence, || Slot { view, votes: 0, request: commit.request.clone() })
        else {
            return;
        };
        if slot.view != commit.view {
            *slot = Slot { view: commit.view, votes: 0, request: commit.request.clone() };
        }
        if slot.request.id() != commit.request.id() {
            return;
        }
        slot.votes |= 1 << commit.committer;
        if self.is_committed(commit.sequence) {
            self.commits_seen += 1;
            self.committed_top = self.committed_top.max(commit.sequence + 1);
            if !self.is_committed(self.next) {
                self.lag_max = self.lag_max.max(self.committed_top - self.next);
            }
        }
        self.execute_ready(out);
    }

    /// A view announcement of one partition's controller: commits of that partition count
    /// only for the view the executor is in (Section III-E).
    pub fn on_view(&mut self, view: View) {
        let partition = merge::partition_of(view.controller, self.controllers) as usize;
        let Some(views) = self.views.get_mut(partition) else { return };
        if let Some(adopted) = views.report(view.controller % self.controllers as u32, view.view) {
            self.view[partition] = self.view[partition].max(adopted);
        }
    }

    /// This replica's view of partition 0 (the only one without partitions).
    pub fn view(&self) -> u64 {
        self.view[0]
    }

    /// This replica's view of each partition.
    pub fn views(&self) -> &[u64] {
        &self.view
    }

    /// Requests to idle partitions to fill the slots the merge waits for.
    pub fn fills_sent(&self) -> u64 {
        self.fills_sent
    }

    /// A stability announcement from a garbage-collection source.
    pub fn on_stable(&mut self, stable: Stable) {
        self.stable.report(stable.source, stable.sequence);
    }

    /// A peer asks for a checkpoint: answer with the newest one that covers what it needs, or,
    /// if this replica has executed that far but checkpointed less, with a fresh one.
    pub fn on_fetch(&mut self, fetch: Fetch, out: &mut Outbox) {
        if fetch.to != self.id {
            return;
        }
        let (sequence, state) = match self.checkpoints.back().filter(|(s, _)| *s >= fetch.sequence) {
            Some((sequence, state)) => (*sequence, state.clone()),
            None if self.next >= fetch.sequence => match self.take_checkpoint() {
                Some(state) => (self.next, state),
                None => return,
            },
            None => return,
        };
        out.transfers.push(Transfer { executor: self.id, to: fetch.executor, sequence, state });
    }

    /// A peer's checkpoint arrived: restore it if it moves this replica forward.
    /// A checkpoint that does not decode or restore is dropped; the next attempt asks another peer.
    pub fn on_transfer(&mut self, transfer: Transfer, out: &mut Outbox) {
        if transfer.to != self.id || transfer.sequence <= self.next {
            return;
        }
        if self.restore_checkpoint(transfer.sequence, transfer.state.clone()).is_err() {
            return;
        }
        self.fetching = None;
        self.transfers_restored += 1;
        self.store(transfer.sequence, transfer.state, out);
        self.execute_ready(out);
    }

    /// Stores the checkpoint at `sequence` and announces it to the garbage-collection sources;
    /// the host holds the announcement until the store is durable (Section III-D: "having stored
    /// the checkpoint, the executor ... sends").
    fn store(&mut self, sequence: u64, state: Arc<Vec<u8>>, out: &mut Outbox) {
        out.stores.push(Store { executor: self.id, sequence, state });
        if self.durable.is_none_or(|d| sequence > d) {
            self.durable = Some(sequence);
            out.checkpoints.push(Checkpoint { executor: self.id, sequence });
        }
    }

    /// Replaces this replica's state with a framed checkpoint at `sequence` (after a restart, or
    /// from a peer): the application, the duplicate-detection table and the counters. A corrupt
    /// or mismatched checkpoint is rejected and the state is unchanged.
    pub fn restore_checkpoint(&mut self, sequence: u64, state: Arc<Vec<u8>>) -> Result<(), String> {
        let (framed_sequence, payload) = frame::unframe(&state).map_err(|e| e.to_string())?;
        if framed_sequence != sequence {
            return Err(format!("checkpoint claims sequence {framed_sequence} instead of {sequence}"));
        }
        let decoded: CheckpointState =
            bincode::deserialize(payload).map_err(|e| format!("undecodable checkpoint: {e}"))?;
        if decoded.sequence != sequence {
            return Err(format!("checkpoint claims sequence {} instead of {sequence}", decoded.sequence));
        }
        self.app.restore(&decoded.app).map_err(|e| e.to_string())?;
        self.next = decoded.sequence;
        self.history = decoded.history;
        self.executed = decoded.executed;
        self.agreed = decoded.agreed;
        decoded.clients.validate()?;
        if !self.mutated(Mutation::CheckpointForgetsClients) {
            self.clients = decoded.clients;
        }
        self.slots.advance(self.next);
        self.keep_checkpoint(sequence, state);
        Ok(())
    }

    /// The newest checkpoint this replica holds: what it would restart from.
    pub fn newest_checkpoint(&self) -> Option<(u64, Arc<Vec<u8>>)> {
        self.checkpoints.back().cloned()
    }

    fn announce(&mut self, now_us: u64, out: &mut Outbox) {
        let Some(sequence) = self.durable else { return };
        if self.announce.due(now_us, Some(sequence)) {
            out.checkpoints.push(Checkpoint { executor: self.id, sequence });
        }
    }

    fn fetch(&mut self, sequence: u64, now_us: u64, out: &mut Outbox) {
        let peer = match &self.fetching {
            None => (self.id + 1) % self.executors,
            Some(f) if now_us.saturating_sub(f.sent_us) >= self.repair_timeout_us => self.next_peer(f.peer),
            Some(_) => return,
        };
        self.fetching = Some(Fetching { peer, sent_us: now_us });
        out.fetches.push(Fetch { executor: self.id, to: peer, sequence });
    }

    fn next_peer(&self, peer: u32) -> u32 {
        let next = (peer + 1) % self.executors;
        if next == self.id { (next + 1) % self.executors } else { next }
    }

    fn is_committed(&self, sequence: u64) -> bool {
        let quorum = if self.mutated(Mutation::CommitAfterF) { self.quorum - 1 } else { self.quorum };
        self.slots.get(sequence).is_some_and(|slot| slot.votes.count_ones() >= quorum)
    }

    fn execute_ready(&mut self, out: &mut Outbox) {
        if self.mutated(Mutation::ExecuteOutOfOrder) {
            self.execute_any_committed(out);
        }
        loop {
            self.checkpoint_if_due(out);
            if !self.is_committed(self.next) {
                return;
            }
            let Some(slot) = self.slots.take(self.next) else { return };
            self.execute(self.next, &slot.request, out);
            self.next += 1;
            self.slots.advance(self.next);
        }
    }

    /// The out-of-order mutation: executes a committed instance above `next` and skips ahead.
    fn execute_any_committed(&mut self, out: &mut Outbox) {
        let above = (self.next + 1..self.slots.end()).find(|s| self.is_committed(*s));
        if let Some(sequence) = above.filter(|_| !self.is_committed(self.next))
            && let Some(slot) = self.slots.take(sequence)
        {
            self.execute(sequence, &slot.request, out);
            self.next = sequence + 1;
            self.slots.advance(self.next);
        }
    }

    /// Section III-D: checkpoint before executing `s` with `s mod CP == 0`.
    fn checkpoint_if_due(&mut self, out: &mut Outbox) {
        let due = self.next > 0 && self.next.is_multiple_of(self.checkpoint_interval);
        let taken = self.checkpoints.back().is_some_and(|(s, _)| *s >= self.next);
        if !due || taken {
            return;
        }
        let Some(framed) = self.take_checkpoint() else { return };
        self.keep_checkpoint(self.next, framed.clone());
        self.store(self.next, framed, out);
    }

    /// The framed state before `next`: application snapshot, client table, counters.
    fn take_checkpoint(&self) -> Option<Arc<Vec<u8>>> {
        let app = self.app.snapshot();
        let state = CheckpointRef {
            sequence: self.next,
            history: self.history,
            executed: self.executed,
            agreed: &self.agreed,
            clients: &self.clients,
            app: &app,
        };
        let payload = bincode::serialize(&state).ok()?;
        Some(Arc::new(frame::frame(self.next, &payload)))
    }

    fn keep_checkpoint(&mut self, sequence: u64, state: Arc<Vec<u8>>) {
        self.checkpoints.push_back((sequence, state));
        while self.checkpoints.len() > CHECKPOINTS_KEPT {
            self.checkpoints.pop_front();
        }
    }

    fn execute(&mut self, sequence: u64, request: &Request, out: &mut Outbox) {
        if let Some(agreed) = self.agreed.get_mut(request.source as usize) {
            *agreed = (*agreed).max(request.number);
        }
        // Sessions end by log position, before the slot executes: the same at every replica.
        self.clients.expire(sequence);
        self.end_sessions();
        let skip_duplicate_check = self.mutated(Mutation::SkipDuplicateCheck);
        for (index, command) in request.commands.iter().enumerate() {
            let (client, timestamp) = (command.client, command.timestamp);
            // Opening a session may end the least recently active one; the application hears
            // of it before this command executes.
            let opens = self.opens_session(command);
            let Some(mut entry) = self.clients.session_opened_if(client, opens, sequence) else {
                self.reply((request, index), command, Outcome::SessionExpired, Vec::new(), out);
                continue;
            };
            for ended in entry.take_ended() {
                self.app.session_expired(ended);
            }
            // A command cannot acknowledge its own answer: a client that claims so is wrong, and
            // its command must still execute.
            entry.acknowledge(command.answered_below.min(timestamp));
            let verdict = if skip_duplicate_check { Verdict::Execute } else { entry.check(timestamp) };
            let (outcome, result) = match verdict {
                Verdict::Cached(result) => (Outcome::Cached, result.to_vec()),
                Verdict::Expired => (Outcome::Expired, Vec::new()),
                Verdict::SessionExpired => (Outcome::SessionExpired, Vec::new()),
                Verdict::Execute => {
                    // A keep-alive only marks its session active; the application never sees it.
                    let result =
                        if command.is_keep_alive() { Vec::new() } else { self.app.execute_for(client, &command.op) };
                    entry.record(timestamp, result.clone());
                    self.chain(sequence, command, &result);
                    if self.emit_executed {
                        let command = command.clone();
                        let executed = Executed {
                            executor: self.id,
                            sequence,
                            index: index as u32,
                            // `chain` counted this command already.
                            position: self.executed - 1,
                            command,
                            result: result.clone(),
                        };
                        out.executed.push(executed);
                    }
                    (Outcome::Executed, result)
                }
            };
            self.reply((request, index), command, outcome, result, out);
        }
    }

    /// True if `command` opens a session for a client the table does not hold: only the
    /// client's first command does (see the client table's module documentation).
    fn opens_session(&self, command: &Command) -> bool {
        let (timestamp, answered_below) = (command.timestamp, command.answered_below);
        if self.mutated(Mutation::UnansweredCommandsOpenSessions) {
            return answered_below.min(timestamp) <= FIRST_TIMESTAMP;
        }
        client_table::may_open(timestamp, answered_below)
    }

    /// Answers the command at `index` of `request`.
    fn reply(&self, at: (&Request, usize), command: &Command, outcome: Outcome, result: Vec<u8>, out: &mut Outbox) {
        let ((request, index), executor) = (at, self.id);
        let (client, timestamp, source, number) = (command.client, command.timestamp, request.source, request.number);
        let reply =
            Reply { executor, source, request: number, index: index as u32, client, timestamp, outcome, result };
        match command.origin {
            Some(origin) => out.forwarded.push((origin, reply)),
            None => out.replies.push(reply),
        }
    }

    /// Tells the application of every session that ended (its ephemeral state goes with it).
    fn end_sessions(&mut self) {
        for client in self.clients.take_ended() {
            self.app.session_expired(client);
        }
    }

    /// The progress report: per source the highest request committed in its partition's
    /// contiguous prefix (executed, or committed and waiting in the merge), per partition its
    /// committed prefix and what the merge waits for (Section IV).
    fn actual(&self) -> Actual {
        let mut agreed = self.agreed.clone();
        let mut frontier = vec![0; self.partitions];
        for (partition, frontier) in frontier.iter_mut().enumerate() {
            let partition = partition as u32;
            let mut slot = merge::partition_stable(self.next, partition, self.partitions);
            loop {
                let exec = merge::exec_sequence(partition, slot, self.partitions);
                let Some(request) = self.committed(exec) else { break };
                if let Some(agreed) = agreed.get_mut(request.source as usize) {
                    *agreed = (*agreed).max(request.number);
                }
                slot += 1;
            }
            *frontier = slot;
        }
        let wanted = (0..self.partitions as u32).map(|p| self.wanted(p)).collect();
        Actual { executor: self.id, agreed, frontier, wanted }
    }

    fn committed(&self, exec: u64) -> Option<&Request> {
        self.is_committed(exec).then(|| self.slots.get(exec).map(|slot| &slot.request)).flatten()
    }

    /// The execution slot below which the merge needs every slot now: one above the highest
    /// committed slot, or the next checkpoint boundary when that is less than one round of the
    /// partitions away. A partition whose window is full (a window of one checkpoint interval)
    /// waits for that checkpoint, so no later slot of its own can show the others how far to
    /// fill (the simulator found this deadlock).
    fn merge_target(&self) -> u64 {
        let boundary = self.committed_top.next_multiple_of(self.checkpoint_interval);
        if boundary - self.committed_top < self.partitions as u64 { boundary } else { self.committed_top }
    }

    /// The merge is held up: a slot it needs now is not committed.
    fn blocked(&self) -> bool {
        self.partitions > 1 && self.merge_target() > self.next && !self.is_committed(self.next)
    }

    /// How many slots of `partition` the merge waits for: all of its slots below the merge
    /// target; 0 while the merge is not held up.
    fn wanted(&self, partition: u32) -> u64 {
        if !self.blocked() {
            return 0;
        }
        merge::partition_stable(self.merge_target(), partition, self.partitions)
    }

    /// Section IV: the merge waits on partitions that did not propose their slots. Each is asked
    /// once per new height (again after the repair timeout, in case the ask was lost), and its
    /// proposer fills them with no-ops if it has nothing to propose. The ask reaches no further
    /// than the merge needs now: a partition under load has usually proposed that far already,
    /// and is then not filled at all.
    fn ask_fill(&mut self, now_us: u64, out: &mut Outbox) {
        if !self.blocked() {
            return;
        }
        for partition in 0..self.partitions as u32 {
            let Some(through) = self.wanted(partition).checked_sub(1) else { continue };
            let exec = merge::exec_sequence(partition, through, self.partitions);
            if exec < self.next || self.is_committed(exec) {
                continue;
            }
            let (asked, asked_us) = self.fill_asked[partition as usize];
            if through <= asked && now_us.saturating_sub(asked_us) < self.repair_timeout_us {
                continue;
            }
            self.fill_asked[partition as usize] = (through, now_us);
            self.fills_sent += 1;
            let view = self.view[partition as usize];
            out.nacks.push(Nack { executor: self.id, partition, view, sequence: through, fill: true });
        }
    }

    fn chain(&mut self, sequence: u64, command: &Command, result: &[u8]) {
        let position = sequence.rotate_left(40) ^ command.client.rotate_left(20) ^ command.timestamp;
        self.history = digest_extend(digest_extend(self.history ^ position, &command.op), result);
        self.executed += 1;
    }
}

impl<A: Application> Replica for Executor<A> {
    fn stage(&self) -> Stage {
        Stage::Executor
    }

    fn id(&self) -> u32 {
        self.id
    }

    fn on_tuple(&mut self, tuple: Tuple, _now_us: u64, out: &mut Outbox) -> bool {
        match tuple {
            Tuple::Commit(commit) => self.on_commit(commit, out),
            Tuple::Stable(stable) => self.on_stable(stable),
            Tuple::Fetch(fetch) => self.on_fetch(fetch, out),
            Tuple::Transfer(transfer) => self.on_transfer(transfer, out),
            Tuple::View(view) => self.on_view(view),
            _ => return false,
        }
        true
    }

    /// Time passed: an executor that made no progress repairs (state transfer when it is behind
    /// the threshold, a nack when a gap holds it up); its newest checkpoint is announced again
    /// now and then, so that a garbage-collection source that missed it learns it.
    fn on_tick(&mut self, now_us: u64, out: &mut Outbox) {
        self.announce(now_us, out);
        let key = self.next ^ self.commits_seen.rotate_left(24) ^ self.wanted(0).rotate_left(48);
        if self.report.due(now_us, Some(key)) {
            out.actuals.push(self.actual());
        }
        self.ask_fill(now_us, out);
        let idle = self.slots.occupied() == 0;
        if self.next != self.stalled_at || (self.was_idle && !idle) {
            self.stalled_at = self.next;
            self.stalled_since_us = now_us;
            self.fetching = None;
            self.nacks_at_stall = self.nacks_sent;
        }
        self.was_idle = idle;
        if now_us.saturating_sub(self.stalled_since_us) < self.repair_timeout_us {
            return;
        }
        let unanswered = self.nacks_sent - self.nacks_at_stall;
        if self.next < self.stable() {
            self.fetch(self.stable(), now_us, out);
        } else if !idle && unanswered >= NACKS_BEFORE_FETCH {
            // The proposer does not answer (crashed, or silent after a restart) and no view
            // change is coming: a peer that executed further supplies the state.
            self.fetch(self.next + 1, now_us, out);
        } else if !idle && now_us.saturating_sub(self.nacked_us) >= self.repair_timeout_us {
            // Slots hold only sequence numbers from `next` on, and `next` is not committed
            // (it would have executed): an instance is stuck.
            self.nacked_us = now_us;
            self.nacks_sent += 1;
            let (partition, sequence) = merge::slot_of(self.next, self.partitions);
            let view = self.view[partition as usize];
            out.nacks.push(Nack { executor: self.id, partition, view, sequence, fill: false });
        }
    }

    /// Restores the newest checkpoint storage holds; a damaged one leaves the replica empty
    /// (it then catches up from a peer, Section III-D).
    fn resume(&mut self, recovered: Recovered) -> Result<(), String> {
        match recovered {
            Recovered::Checkpoint(Some((sequence, state))) => {
                self.restore_checkpoint(sequence, state)?;
                self.durable = Some(sequence);
                Ok(())
            }
            Recovered::Checkpoint(None) | Recovered::Fresh => Ok(()),
            other => Err(format!("an executor resumes from a checkpoint, not {other:?}")),
        }
    }

    /// Every epoch while it has work or waits for something (it repairs on timeouts); when idle,
    /// its next progress report and checkpoint announcement.
    fn deadline_us(&self) -> Option<u64> {
        let waiting = self.slots.occupied() > 0 || self.blocked() || self.fetching.is_some();
        if waiting || self.next < self.stable() {
            return Some(0);
        }
        let announce = self.durable.map(|_| self.announce.next_us());
        [announce, Some(self.report.next_us())].into_iter().flatten().min()
    }

    fn counters(&self) -> Counters {
        Counters {
            next: self.next,
            view: self.view.iter().copied().max().unwrap_or(0),
            count: self.executed,
            filled: self.fills_sent,
            lag_max: self.lag_max,
            history: self.history,
            held: self.held() as u64,
            stable: self.stable(),
            transfers: self.transfers_restored,
            repairs: self.nacks_sent,
            stored: self.durable.unwrap_or(0),
            sessions: self.clients.clients() as u64,
            ..Counters::default()
        }
    }

    fn state_digest(&self) -> u64 {
        Executor::state_digest(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::kv::{KvOp, KvStore};

    fn params() -> Params {
        Params { window: 8, checkpoint_interval: 4, client_window: 4, ..Params::default() }
    }

    fn put(client: u64, timestamp: u64, key: &str) -> Command {
        Command::new(client, timestamp, KvOp::Put { key: key.into(), value: b"v".to_vec() }.encode())
    }

    fn request(number: u64, commands: Vec<Command>) -> Request {
        Request { source: 0, number, commands: Arc::from(commands) }
    }

    fn commit(committer: u32, sequence: u64, view: u64, request: &Request) -> Commit {
        Commit { committer, sequence, view, request: request.clone() }
    }

    fn executor() -> Executor<KvStore> {
        Executor::new(0, &params(), KvStore::default()).emit_executed(true)
    }

    /// Section III-C: a request commits after f+1 commits from different committers.
    #[test]
    fn commits_after_f_plus_one_distinct_committers() {
        let mut e = executor();
        let mut out = Outbox::default();
        let r = request(1, vec![put(1, 1, "a")]);
        e.on_commit(commit(0, 0, 0, &r), &mut out);
        e.on_commit(commit(0, 0, 0, &r), &mut out);
        assert_eq!(e.next(), 0, "the same committer twice is one vote");
        e.on_commit(commit(2, 0, 0, &r), &mut out);
        assert_eq!(e.next(), 1);
        assert_eq!(out.replies.len(), 1);
        assert_eq!(out.replies[0].outcome, Outcome::Executed);
    }

    /// Section III-C: commits count only for the view the executor is in; a commit of a higher
    /// view proves that view (its committer entered it after f+1 controllers announced it).
    #[test]
    fn counts_commits_of_its_view_only() {
        let mut e = executor();
        let mut out = Outbox::default();
        let r = request(1, vec![put(1, 1, "a")]);
        e.on_view(View { controller: 0, view: 2 });
        e.on_view(View { controller: 1, view: 2 });
        e.on_commit(commit(0, 0, 1, &r), &mut out);
        e.on_commit(commit(1, 0, 1, &r), &mut out);
        assert_eq!(e.next(), 0, "view 1 is over for this executor");
        e.on_commit(commit(0, 0, 3, &r), &mut out);
        assert_eq!(e.view(), 3);
        e.on_commit(commit(1, 0, 3, &r), &mut out);
        assert_eq!(e.next(), 1);
    }

    /// Section III-C: execution follows sequence order, whatever order commits arrive in.
    #[test]
    fn executes_strictly_in_sequence_order() {
        let mut e = executor();
        let mut out = Outbox::default();
        let r0 = request(1, vec![put(1, 1, "a")]);
        let r1 = request(2, vec![put(2, 1, "b")]);
        e.on_commit(commit(0, 1, 0, &r1), &mut out);
        e.on_commit(commit(1, 1, 0, &r1), &mut out);
        assert_eq!(e.next(), 0, "1 is committed but 0 is not");
        e.on_commit(commit(1, 0, 0, &r0), &mut out);
        e.on_commit(commit(2, 0, 0, &r0), &mut out);
        assert_eq!(e.next(), 2);
        let order: Vec<u64> = out.executed.iter().map(|x| x.command.client).collect();
        assert_eq!(order, vec![1, 2]);
    }

    /// Section III-C: a duplicate is answered from the cache and not executed again.
    #[test]
    fn a_duplicate_is_answered_from_the_cache() {
        let mut e = executor();
        let mut out = Outbox::default();
        let r0 = request(1, vec![put(1, 1, "a")]);
        let r1 = request(2, vec![put(1, 1, "a")]);
        for (s, r) in [(0, &r0), (1, &r1)] {
            e.on_commit(commit(0, s, 0, r), &mut out);
            e.on_commit(commit(1, s, 0, r), &mut out);
        }
        assert_eq!(e.executed(), 1);
        assert_eq!(out.replies.iter().map(|r| r.outcome).collect::<Vec<_>>(), vec![Outcome::Executed, Outcome::Cached]);
        assert_eq!(out.replies[0].result, out.replies[1].result);
    }

    /// A client that acknowledges the command it sends does not lose that command.
    #[test]
    fn a_command_cannot_acknowledge_itself() {
        let mut e = executor();
        let mut out = Outbox::default();
        let command = Command { answered_below: 99, ..put(1, 5, "a") };
        let r = request(1, vec![put(1, 1, "a"), command]);
        e.on_commit(commit(0, 0, 0, &r), &mut out);
        e.on_commit(commit(1, 0, 0, &r), &mut out);
        assert_eq!(out.replies[1].outcome, Outcome::Executed);
    }

    /// Only a client's first command opens its session: a later one of a client without a
    /// session (never opened, or ended) is answered "session expired" and not executed, even
    /// if it claims no answers; the opener then opens the session.
    #[test]
    fn only_a_first_command_opens_a_session() {
        let mut e = executor();
        let mut out = Outbox::default();
        let later = |answered_below| Command { answered_below, ..put(1, 3, "a") };
        let r = request(1, vec![later(0), later(1), put(1, 1, "a"), later(0)]);
        e.on_commit(commit(0, 0, 0, &r), &mut out);
        e.on_commit(commit(1, 0, 0, &r), &mut out);
        let outcomes: Vec<Outcome> = out.replies.iter().map(|r| r.outcome).collect();
        let expected = [Outcome::SessionExpired, Outcome::SessionExpired, Outcome::Executed, Outcome::Executed];
        assert_eq!(outcomes, expected);
        assert_eq!(e.executed(), 2, "the refused commands ran nowhere");
    }

    /// Section III-D: a checkpoint is taken before executing s with s mod CP == 0.
    #[test]
    fn checkpoints_every_interval() {
        let mut e = executor();
        let mut out = Outbox::default();
        for s in 0..9 {
            let r = request(s + 1, vec![put(1, s + 1, "k")]);
            e.on_commit(commit(0, s, 0, &r), &mut out);
            e.on_commit(commit(1, s, 0, &r), &mut out);
        }
        assert_eq!(out.stores.iter().map(|s| s.sequence).collect::<Vec<_>>(), vec![4, 8]);
        let announced = vec![Checkpoint { executor: 0, sequence: 4 }, Checkpoint { executor: 0, sequence: 8 }];
        assert_eq!(out.checkpoints, announced, "each store is announced once");
        let route = crate::protocol::topology::route(crate::protocol::topology::Kind::Checkpoint);
        assert!(route.after_persist, "announced only once durable: the host holds it for the store");
    }

    /// Section III-D: a lagging executor loads a peer's checkpoint and continues from it.
    #[test]
    fn catches_up_by_state_transfer() {
        let mut ahead = executor();
        let mut out = Outbox::default();
        for s in 0..4 {
            let r = request(s + 1, vec![put(1, s + 1, &format!("k{s}"))]);
            ahead.on_commit(commit(0, s, 0, &r), &mut out);
            ahead.on_commit(commit(1, s, 0, &r), &mut out);
        }
        let mut behind = Executor::new(1, &params(), KvStore::default());
        behind.on_stable(Stable { source: 0, sequence: 4 });
        behind.on_stable(Stable { source: 1, sequence: 4 });
        let mut lag = Outbox::default();
        behind.on_tick(0, &mut lag);
        assert!(lag.fetches.is_empty(), "waits for the timeout first");
        behind.on_tick(1_000_000, &mut lag);
        let fetch = lag.fetches.pop().expect("fetches after the timeout");
        assert!(lag.nacks.is_empty(), "behind the threshold, a nack cannot help");
        assert_eq!((fetch.executor, fetch.sequence), (1, 4));
        let mut answer = Outbox::default();
        ahead.on_fetch(Fetch { to: 0, ..fetch }, &mut answer);
        let transfer = answer.transfers.pop().expect("the peer answers");
        behind.on_transfer(transfer, &mut lag);
        assert_eq!(behind.next(), 4);
        assert_eq!(behind.state_digest(), ahead.state_digest());
        assert_eq!(behind.history(), ahead.history());
    }

    /// Repair: an executor held up by an instance that does not commit asks the active proposer
    /// for it, once per timeout, and only when it has evidence that something is under way.
    /// The deadlock the simulator found: with a window of one checkpoint interval, partition 0
    /// fills its window and waits for the checkpoint, which needs partition 1's last slot before
    /// the boundary; no later committed slot shows that it is missing, so the boundary does.
    #[test]
    fn asks_for_the_slots_the_next_checkpoint_needs() {
        let params = Params { partitions: 2, window: 4, checkpoint_interval: 4, ..params() };
        let mut e = Executor::new(0, &params, KvStore::default());
        let mut out = Outbox::default();
        for exec in 0..7 {
            let r = request(exec + 1, vec![put(1, exec + 1, "a")]);
            for committer in 0..2 {
                e.on_commit(commit(committer, exec, 0, &r), &mut out);
            }
        }
        assert_eq!(e.next(), 7, "everything committed executed; partition 0's window is full");
        e.on_tick(1_000_000, &mut out);
        let fills: Vec<Nack> = out.nacks.iter().copied().filter(|n| n.fill).collect();
        assert_eq!(fills, vec![Nack { executor: 0, partition: 1, view: 0, sequence: 3, fill: true }]);
    }

    /// Section IV: with two partitions, a committed slot of partition 0 waits for partition 1's
    /// slot before it; the executor asks partition 1 to fill exactly the slots it needs, once,
    /// and executes the merged order when the no-op commits.
    #[test]
    fn asks_an_idle_partition_to_fill_what_the_merge_needs() {
        let params = Params { partitions: 2, ..params() };
        let mut e = Executor::new(0, &params, KvStore::default());
        let mut out = Outbox::default();
        let r = request(1, vec![put(1, 1, "a")]);
        let r2 = request(2, vec![put(1, 2, "b")]);
        for committer in 0..2 {
            e.on_commit(commit(committer, 0, 0, &r), &mut out);
            e.on_commit(commit(committer, 2, 0, &r2), &mut out);
        }
        assert_eq!(e.next(), 1, "execution slot 0 (partition 0's slot 0) executed; slot 1 is partition 1's");
        e.on_tick(1_000_000, &mut out);
        let fills: Vec<Nack> = out.nacks.iter().copied().filter(|n| n.fill).collect();
        assert_eq!(fills, vec![Nack { executor: 0, partition: 1, view: 0, sequence: 0, fill: true }]);
        e.on_tick(1_000_001, &mut out);
        assert_eq!(out.nacks.iter().filter(|n| n.fill).count(), 1, "asked once per height");
        let actual = out.actuals.last().cloned().unwrap();
        assert_eq!((actual.frontier, actual.wanted), (vec![2, 0], vec![2, 1]));
        assert_eq!(actual.agreed[0], 2, "request 2 is committed in partition 0's prefix, though not executed");
        for committer in 0..2 {
            e.on_commit(commit(committer, 1, 0, &Request::noop()), &mut out);
        }
        assert_eq!(e.next(), 3, "the no-op let the merge go on");
        assert_eq!(e.fills_sent(), 1);
    }

    #[test]
    fn a_gap_is_nacked_after_the_timeout() {
        let mut e = executor();
        let mut out = Outbox::default();
        e.on_tick(0, &mut out);
        e.on_tick(1_000_000, &mut out);
        assert!(out.nacks.is_empty(), "idle, nothing is missing");
        let r = request(2, vec![put(1, 2, "b")]);
        e.on_commit(commit(0, 1, 0, &r), &mut out);
        e.on_tick(1_000_001, &mut out);
        e.on_tick(1_001_000, &mut out);
        assert!(out.nacks.is_empty(), "new work after a long idle time starts a new timeout");
        e.on_tick(1_030_000, &mut out);
        assert_eq!(out.nacks, vec![Nack { executor: 0, partition: 0, view: 0, sequence: 0, fill: false }]);
        e.on_tick(1_031_000, &mut out);
        assert_eq!(out.nacks.len(), 1, "at most one nack per timeout");
    }

    /// Section III-D: a corrupt checkpoint is never restored; the state stays unchanged.
    /// Repair without a proposer: when nacks go unanswered, a peer that executed further sends
    /// its state, taking a checkpoint on demand if it has none that far.
    #[test]
    fn a_peer_supplies_state_when_nacks_go_unanswered() {
        let mut ahead = executor();
        let mut out = Outbox::default();
        for s in 0..3 {
            let r = request(s + 1, vec![put(1, s + 1, "k")]);
            ahead.on_commit(commit(0, s, 0, &r), &mut out);
            ahead.on_commit(commit(1, s, 0, &r), &mut out);
        }
        let mut behind = Executor::new(1, &params(), KvStore::default()).repair_timeout_us(10);
        let mut lag = Outbox::default();
        let r = request(3, vec![put(1, 3, "k")]);
        behind.on_commit(commit(0, 2, 0, &r), &mut lag);
        for now in (0..100).step_by(10) {
            behind.on_tick(now, &mut lag);
        }
        assert_eq!(lag.nacks.len(), 3, "nacks first");
        let fetch = lag.fetches.pop().expect("then a fetch");
        assert_eq!(fetch.sequence, 1);
        let mut answer = Outbox::default();
        ahead.on_fetch(Fetch { to: 0, ..fetch }, &mut answer);
        let transfer = answer.transfers.pop().expect("a checkpoint taken on demand");
        assert_eq!(transfer.sequence, 3);
        behind.on_transfer(transfer, &mut lag);
        assert_eq!((behind.next(), behind.history()), (3, ahead.history()));
    }

    #[test]
    fn a_corrupt_transfer_is_dropped() {
        let mut ahead = executor();
        let mut out = Outbox::default();
        for s in 0..4 {
            let r = request(s + 1, vec![put(1, s + 1, "k")]);
            ahead.on_commit(commit(0, s, 0, &r), &mut out);
            ahead.on_commit(commit(1, s, 0, &r), &mut out);
        }
        let (sequence, good) = ahead.newest_checkpoint().unwrap();
        let mut behind = executor();
        for flip in [0, 9, 40, good.len() - 1] {
            let mut bad = (*good).clone();
            bad[flip] ^= 1;
            let transfer = Transfer { executor: 1, to: 0, sequence, state: Arc::new(bad) };
            behind.on_transfer(transfer, &mut out);
            assert_eq!(behind.next(), 0, "a corrupt checkpoint (byte {flip}) was restored");
        }
        behind.on_transfer(Transfer { executor: 1, to: 0, sequence, state: good }, &mut out);
        assert_eq!(behind.next(), 4);
    }
}
