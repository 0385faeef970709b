//! The proposer stage (Sections III-C and III-E): assigns sequence numbers to requests, and
//! takes over after a view change.

use std::collections::{BTreeMap, VecDeque};

use super::params::Params;
use super::quorum::Announced;
use super::replica::{Counters, Outbox, Recovered, Replica};
use super::topology::{Partition, Stage, Tuple, leader_of};
use super::tuple::{Commit, Nack, Propose, Record, Request, Stable, View};
use super::window::Window;

/// Proposals repeated for one nack.
const NACK_BURST: u64 = 16;

/// Proposer replica `p`. In view `v` only proposer `v mod (f+1)` is active.
///
/// The active proposer assigns increasing sequence numbers and sends each proposal to every
/// committer at once, without waiting for earlier instances to finish: instances are pipelined
/// as long as the window `[s_stable, s_stable + window)` has room (Sections III-C, III-D, VI-B).
/// Requests that find the window full wait in arrival order and go out when the stability
/// threshold rises.
///
/// `max_in_flight` (default: the window) bounds the instances proposed in this view and not yet
/// committed, that is, not yet attested by f+1 committers, whose commits the proposer hears
/// too. With 1 the proposer starts an instance only once the previous one is decided, as
/// BFT-SMaRt does (Section VI-B); the bound counts commits, not the stability threshold, because
/// the threshold rises only at checkpoints and a bound on it would also throttle by the
/// checkpoint interval.
///
/// When a view change makes it the proposer of view `v` (Section III-E), it first waits for
/// records from f+1 distinct committers, re-proposes in `v`, for every slot they cover, the
/// request with the highest view, fills slots that no record covers with no-ops, and only then
/// proposes new requests.
#[derive(Debug)]
pub struct Proposer {
    id: u32,
    /// This replica's partition, and its index within it.
    partition: Partition,
    local: u32,
    controllers: usize,
    committers: usize,
    /// Minimum time between two proposals (the throttle of the paper's Figure 7), and when the
    /// last one went out.
    delay_us: u64,
    proposed_us: Option<u64>,
    proposers: u64,
    quorum: usize,
    window: u64,
    view: u64,
    views: Announced,
    /// Records collected for the view this proposer is taking over, by committer.
    recovering: Option<BTreeMap<u32, Record>>,
    next_sequence: u64,
    stable: Announced,
    waiting: VecDeque<Request>,
    /// Instances proposed and not yet committed, at most (`max_in_flight`).
    max_in_flight: u64,
    /// The committers (bit mask, by index in the partition) that committed each instance of
    /// this view above `committed`.
    commits: Window<u64>,
    /// Every instance below this is committed in this view or below the threshold.
    committed: u64,
    /// The proposals of this view above the threshold, kept to answer [`Nack`]s.
    sent: Window<Propose>,
    in_flight_max: u64,
    proposed: u64,
    repeated: u64,
    stalls: u64,
    dropped: u64,
    repair_timeout_us: u64,
    /// When the threshold last rose or a proposal last went out.
    progress_us: u64,
    /// When proposals were last repeated, and the current backoff.
    repeated_us: u64,
    backoff_us: u64,
    /// Progress since the last tick.
    progressed: bool,
    /// No-ops proposed to fill slots the merge waited for.
    filled: u64,
    /// The time of the latest tuple or tick (for the throttle).
    now_us: u64,
    /// The highest view this replica ever led (durable: host duty, see [`Proposer::led`]). A
    /// restarted proposer has forgotten the sequence numbers it assigned, so it never leads that
    /// view again, only a higher one, through the committers' records.
    led: Option<u64>,
    /// The led view last handed to the host for writing.
    led_written: Option<u64>,
    /// This incarnation leads its view.
    leading: bool,
}

impl Proposer {
    /// Proposer replica `id` of a deployment with `params`.
    pub fn new(id: u32, params: &Params) -> Proposer {
        let (_, local) = super::topology::locate(Stage::Proposer, id, params);
        Proposer {
            id,
            partition: Partition::of(Stage::Proposer, id, params),
            local,
            controllers: params.controllers(),
            committers: params.committers(),
            delay_us: params.proposer_delay_us,
            proposed_us: None,
            filled: 0,
            now_us: 0,
            proposers: params.proposers() as u64,
            quorum: params.quorum(),
            window: params.window,
            view: 0,
            views: Announced::new(params.controllers(), params.quorum(), 0),
            recovering: None,
            next_sequence: 0,
            stable: Announced::new(params.gc_sources(), params.quorum(), 0),
            waiting: VecDeque::new(),
            max_in_flight: params.in_flight_bound(),
            commits: Window::new(0, params.window),
            committed: 0,
            sent: Window::new(0, 2 * params.window),
            in_flight_max: 0,
            proposed: 0,
            repeated: 0,
            stalls: 0,
            dropped: 0,
            repair_timeout_us: 20_000,
            progress_us: 0,
            repeated_us: 0,
            backoff_us: 20_000,
            progressed: false,
            led: (local == 0).then_some(0),
            led_written: None,
            leading: local == 0,
        }
    }

    /// Proposer replica `id` after a restart, with the highest view it ever led (from durable
    /// storage): it stays silent until a view change makes it the proposer of a higher view,
    /// and then takes over from the records.
    pub fn restarted(id: u32, params: &Params, led: Option<u64>) -> Proposer {
        Proposer { led, led_written: led, leading: false, ..Proposer::new(id, params) }
    }

    /// The highest view this replica ever led. It is written to [`Outbox::value`] before the
    /// first proposal of that view (host duty: durable before the proposals leave).
    pub fn led(&self) -> Option<u64> {
        self.led
    }

    /// How long instances in flight may make no progress before they are sent again (doubling
    /// on each further attempt, up to 50 times).
    pub fn repair_timeout_us(mut self, timeout_us: u64) -> Self {
        self.repair_timeout_us = timeout_us;
        self.backoff_us = timeout_us;
        self
    }

    /// True if this replica is the proposer of its current view and has finished taking over.
    pub fn is_active(&self) -> bool {
        self.is_leader() && self.recovering.is_none()
    }

    fn is_leader(&self) -> bool {
        self.leading
    }

    /// This replica's current view.
    pub fn view(&self) -> u64 {
        self.view
    }

    /// The stability threshold this replica adopted.
    pub fn stable(&self) -> u64 {
        self.partition.stable(self.stable.adopted())
    }

    /// No-ops proposed because the merge waited on this partition's slots (Section IV).
    pub fn filled(&self) -> u64 {
        self.filled
    }

    /// Proposed instances not yet below the stability threshold.
    pub fn in_flight(&self) -> u64 {
        self.next_sequence - self.stable().min(self.next_sequence)
    }

    /// Proposed instances not yet committed (bounded by `max_in_flight`).
    pub fn uncommitted(&self) -> u64 {
        self.next_sequence - self.committed_below().min(self.next_sequence)
    }

    /// Every instance below this is committed or below the stability threshold.
    fn committed_below(&self) -> u64 {
        self.committed.max(self.stable())
    }

    /// The next instance fits in the window and in the bound on uncommitted instances.
    fn has_room(&self) -> bool {
        self.next_sequence < self.stable() + self.window
            && self.next_sequence < self.committed_below() + self.max_in_flight
    }

    /// The largest number of instances that were in flight at once: above 1 shows pipelining.
    pub fn in_flight_max(&self) -> u64 {
        self.in_flight_max
    }

    /// Proposals made so far.
    pub fn proposed(&self) -> u64 {
        self.proposed
    }

    /// Requests waiting for room in the window plus proposals kept for repair (state held).
    pub fn held(&self) -> usize {
        self.waiting.len() + self.sent.occupied()
    }

    /// Requests that found the window full and had to wait.
    pub fn stalls(&self) -> u64 {
        self.stalls
    }

    /// Requests dropped because `window` requests were already waiting (their sources resend).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Proposals sent again because an executor asked or instances stalled.
    pub fn repeated(&self) -> u64 {
        self.repeated
    }

    /// A request from a source: proposed at once if the window has room, otherwise it waits.
    /// At most `window` requests wait; more are dropped (memory stays bounded; their sources
    /// resend). A proposer that is not the leader of its view ignores requests.
    pub fn on_request(&mut self, request: Request, out: &mut Outbox) {
        if !self.is_leader() {
            return;
        }
        if self.waiting.len() as u64 >= self.window {
            self.dropped += 1;
            return;
        }
        self.waiting.push_back(request);
        self.propose_waiting(out);
        if !self.waiting.is_empty() {
            self.stalls += 1;
        }
    }

    /// A stability announcement: a rising threshold moves the window and frees room.
    pub fn on_stable(&mut self, stable: Stable, out: &mut Outbox) {
        if let Some(threshold) = self.stable.report(stable.source, stable.sequence) {
            // The threshold is in execution numbering; this proposer's slots in its partition's.
            let threshold = self.partition.stable(threshold);
            self.sent.advance(threshold);
            self.progressed = true;
            self.propose_waiting(out);
        }
    }

    /// A committer's commit (Section III-C): with f+1 distinct committers for an instance of
    /// this view, the instance is decided and frees room under `max_in_flight`.
    pub fn on_commit(&mut self, commit: Commit, out: &mut Outbox) {
        let Some(committer) = self.partition.own(commit.committer, self.committers) else { return };
        if commit.view != self.view || commit.sequence < self.committed_below() {
            return;
        }
        self.commits.advance(self.committed_below());
        let Some(mask) = self.commits.get_or_insert_with(commit.sequence, || 0) else { return };
        *mask |= 1u64 << committer;
        let before = self.committed_below();
        while self.commits.get(self.committed_below()).is_some_and(|m| m.count_ones() as usize >= self.quorum) {
            self.committed = self.committed_below() + 1;
        }
        if self.committed_below() > before {
            self.commits.advance(self.committed_below());
            self.progressed = true;
            self.propose_waiting(out);
        }
    }

    /// A view announcement (Section III-E). Entering a higher view, the proposer of that view
    /// starts collecting records; every other proposer falls silent and forgets its queue.
    pub fn on_view(&mut self, view: View) {
        let Some(controller) = self.partition.own(view.controller, self.controllers) else { return };
        let Some(adopted) = self.views.report(controller, view.view) else { return };
        if adopted <= self.view {
            return;
        }
        self.view = adopted;
        self.waiting.clear();
        self.sent = Window::new(self.stable(), self.sent_capacity());
        self.forget_commits();
        let ours = leader_of(adopted, self.proposers as usize) == self.local;
        self.leading = ours && self.led.is_none_or(|led| adopted > led);
        if self.leading {
            self.led = Some(adopted);
        }
        self.recovering = self.leading.then(BTreeMap::new);
    }

    /// Commits of an earlier view do not count in this one.
    fn forget_commits(&mut self) {
        self.committed = self.stable();
        self.commits = Window::new(self.committed, self.window);
    }

    fn sent_capacity(&self) -> u64 {
        2 * self.window
    }

    /// A committer's records for the view this proposer takes over. With records from f+1
    /// distinct committers it re-proposes and becomes active.
    pub fn on_record(&mut self, record: Record, out: &mut Outbox) {
        if record.view != self.view || self.partition.own(record.committer, self.committers).is_none() {
            return;
        }
        let Some(records) = self.recovering.as_mut() else { return };
        records.insert(record.committer, record);
        if records.len() >= self.quorum
            && let Some(records) = self.recovering.take()
        {
            self.take_over(records, out);
        }
    }

    /// Section III-E: for every slot the records cover, re-propose the request with the highest
    /// view; fill slots no record covers with no-ops; then continue with new requests.
    fn take_over(&mut self, records: BTreeMap<u32, Record>, out: &mut Outbox) {
        let base = records.values().map(|r| r.stable).max().unwrap_or(0).max(self.stable());
        let mut chosen: BTreeMap<u64, (u64, Request)> = BTreeMap::new();
        for accepted in records.into_values().flat_map(|r| r.records).filter(|a| a.sequence >= base) {
            let slot = chosen.entry(accepted.sequence).or_insert((accepted.view, accepted.request.clone()));
            if accepted.view > slot.0 {
                *slot = (accepted.view, accepted.request);
            }
        }
        let top = chosen.keys().next_back().map_or(base, |s| s + 1);
        self.sent = Window::new(base, self.sent_capacity());
        for sequence in base..top {
            let request = chosen.remove(&sequence).map_or_else(Request::noop, |(_, r)| r);
            self.send(Propose { proposer: self.id, sequence, view: self.view, request }, out);
        }
        self.next_sequence = top;
        self.committed = self.committed.max(base);
        self.propose_waiting(out);
    }

    /// An executor in a view this replica leads waits for `sequence`: repeat a burst of proposals
    /// from it. A lagging executor
    /// usually misses a run of instances, and should not need a nack (and a timeout) for each.
    pub fn on_nack(&mut self, nack: Nack, out: &mut Outbox) {
        let ours =
            nack.partition == self.partition.index && leader_of(nack.view, self.proposers as usize) == self.local;
        if !ours || !self.is_active() {
            return;
        }
        if nack.fill {
            self.fill(nack.sequence, out);
        } else {
            self.repeat(nack.sequence..self.next_sequence.min(nack.sequence + NACK_BURST), out);
        }
    }

    /// Section IV: the merge waits on this partition's slots up to `through`. With no request
    /// waiting, every unproposed slot up to it (as far as the window allows) gets a no-op, agreed
    /// like any proposal, so every executor merges the same thing. Waiting requests fill the
    /// slots themselves; the throttle does not hold no-ops back (they cost the proposer nothing).
    fn fill(&mut self, through: u64, out: &mut Outbox) {
        if !self.waiting.is_empty() {
            return;
        }
        while self.next_sequence <= through && self.has_room() {
            let propose =
                Propose { proposer: self.id, sequence: self.next_sequence, view: self.view, request: Request::noop() };
            self.send(propose, out);
            self.next_sequence += 1;
            self.filled += 1;
        }
    }

    /// The throttle (Figure 7's resource-constrained proposer): a proposal may go out now.
    fn may_propose(&self) -> bool {
        self.delay_us == 0 || self.proposed_us.is_none_or(|at| self.now_us.saturating_sub(at) >= self.delay_us)
    }

    fn repeat(&mut self, sequences: std::ops::Range<u64>, out: &mut Outbox) {
        for sequence in sequences {
            if let Some(propose) = self.sent.get(sequence) {
                self.repeated += 1;
                out.proposals.push(propose.clone());
            }
        }
    }

    fn propose_waiting(&mut self, out: &mut Outbox) {
        while self.is_active() && self.has_room() && self.may_propose() {
            let Some(request) = self.waiting.pop_front() else { break };
            let propose = Propose { proposer: self.id, sequence: self.next_sequence, view: self.view, request };
            self.send(propose, out);
            self.next_sequence += 1;
            if self.delay_us > 0 {
                self.proposed_us = Some(self.now_us);
            }
        }
    }

    fn send(&mut self, propose: Propose, out: &mut Outbox) {
        if self.led != self.led_written {
            self.led_written = self.led;
            out.value = self.led;
        }
        if let Some(slot) = self.sent.get_or_insert_with(propose.sequence, || propose.clone()) {
            *slot = propose.clone();
        }
        out.proposals.push(propose);
        self.proposed += 1;
        self.progressed = true;
        self.in_flight_max = self.in_flight_max.max(self.in_flight() + 1);
    }
}

impl Replica for Proposer {
    fn stage(&self) -> Stage {
        Stage::Proposer
    }

    fn id(&self) -> u32 {
        self.id
    }

    fn on_tuple(&mut self, tuple: Tuple, now_us: u64, out: &mut Outbox) -> bool {
        self.now_us = now_us;
        match tuple {
            Tuple::Request { request, .. } => self.on_request(request, out),
            Tuple::Stable(stable) => self.on_stable(stable, out),
            Tuple::Nack(nack) => self.on_nack(nack, out),
            Tuple::View(view) => self.on_view(view),
            Tuple::Record(record) => self.on_record(record, out),
            Tuple::Commit(commit) => self.on_commit(commit, out),
            _ => return false,
        }
        true
    }

    /// Time passed. Instances in flight without progress (no new proposal, no rising threshold)
    /// for a timeout may be stuck where no executor can tell: when every instance at the top of
    /// a full window was lost there is no later instance to reveal the gap, and after the load
    /// stops a lagging executor sees nothing at all. So the proposer repeats, with exponential
    /// backoff: every proposal above the threshold when the window is full, otherwise its last
    /// proposal, which shows a lagging executor what it misses (it then nacks the gap).
    fn on_tick(&mut self, now_us: u64, out: &mut Outbox) {
        self.now_us = now_us;
        if self.delay_us > 0 {
            self.propose_waiting(out);
        }
        let in_flight = self.next_sequence > self.stable();
        if !in_flight || !self.is_active() || std::mem::take(&mut self.progressed) {
            self.progress_us = now_us;
            self.backoff_us = self.repair_timeout_us;
            return;
        }
        let stalled = now_us.saturating_sub(self.progress_us) >= self.repair_timeout_us;
        if !stalled || now_us.saturating_sub(self.repeated_us) < self.backoff_us {
            return;
        }
        self.repeated_us = now_us;
        self.backoff_us = (self.backoff_us * 2).min(self.repair_timeout_us * 50);
        let first = if self.waiting.is_empty() { self.next_sequence - 1 } else { self.stable() };
        self.repeat(first..self.next_sequence, out);
    }

    /// The throttle holds a waiting request until its delay has passed; an active proposer with
    /// instances in flight repeats them once they stall.
    fn deadline_us(&self) -> Option<u64> {
        let throttled = self.delay_us > 0 && !self.waiting.is_empty() && self.is_active();
        let watching = self.is_active() && self.next_sequence > self.stable();
        let throttle = throttled.then(|| self.proposed_us.unwrap_or(0) + self.delay_us);
        let repeat = (self.progress_us + self.repair_timeout_us).max(self.repeated_us + self.backoff_us);
        [throttle, watching.then_some(repeat)].into_iter().flatten().min()
    }

    /// A restarted proposer never leads the view it led before (see [`Proposer::restarted`]).
    fn resume(&mut self, recovered: Recovered) -> Result<(), String> {
        match recovered {
            Recovered::Value(led) => {
                (self.led, self.led_written, self.leading) = (led, led, false);
                Ok(())
            }
            Recovered::Fresh => Ok(()),
            other => Err(format!("a proposer resumes from its led view, not {other:?}")),
        }
    }

    fn counters(&self) -> Counters {
        Counters {
            next: self.proposed,
            count: self.proposed,
            view: self.view,
            in_flight_max: self.in_flight_max,
            held: self.held() as u64,
            stalls: self.stalls,
            dropped: self.dropped,
            stable: self.stable(),
            repairs: self.repeated,
            filled: self.filled,
            ..Counters::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::tuple::{Accepted, Command};

    fn request(number: u64) -> Request {
        let command = Command::new(9, number, vec![]);
        Request { source: 0, number, commands: Arc::from(vec![command]) }
    }

    fn params(window: u64) -> Params {
        Params { window, checkpoint_interval: window.min(4), ..Params::default() }
    }

    fn enter(p: &mut Proposer, view: u64) {
        p.on_view(View { controller: 0, view });
        p.on_view(View { controller: 1, view });
    }

    fn record(committer: u32, view: u64, stable: u64, entries: &[(u64, u64, u64)]) -> Record {
        let records =
            entries.iter().map(|(s, v, q)| Accepted { sequence: *s, view: *v, request: request(*q) }).collect();
        Record { committer, view, stable, records }
    }

    /// Section III-C: the active proposer assigns increasing sequence numbers in its view and
    /// does not wait for earlier instances before proposing the next (pipelining).
    #[test]
    fn pipelines_up_to_the_window() {
        let mut p = Proposer::new(0, &params(4));
        let mut out = Outbox::default();
        for q in 1..=6 {
            p.on_request(request(q), &mut out);
        }
        let sequences: Vec<u64> = out.proposals.iter().map(|x| x.sequence).collect();
        assert_eq!(sequences, vec![0, 1, 2, 3], "four instances in flight at once, then the window is full");
        assert!(out.proposals.iter().all(|x| x.view == 0 && x.proposer == 0));
        assert_eq!(p.in_flight_max(), 4);
        assert_eq!(p.held(), 2 + 4);
    }

    fn commit(committer: u32, sequence: u64, view: u64) -> Commit {
        Commit { committer, sequence, view, request: request(0) }
    }

    /// Section VI-B: with `max_in_flight = 1` the proposer starts an instance only once f+1
    /// committers committed the previous one, however much room the window has.
    #[test]
    fn one_instance_at_a_time_waits_for_f_plus_one_commits() {
        let params = Params { max_in_flight: Some(1), ..params(8) };
        let mut p = Proposer::new(0, &params);
        let mut out = Outbox::default();
        for q in 1..=3 {
            p.on_request(request(q), &mut out);
        }
        assert_eq!(out.proposals.len(), 1, "one instance in flight");
        p.on_commit(commit(0, 0, 0), &mut out);
        assert_eq!(out.proposals.len(), 1, "one commit is not a decision");
        p.on_commit(commit(0, 0, 0), &mut out);
        p.on_commit(commit(1, 0, 3), &mut out);
        assert_eq!(out.proposals.len(), 1, "the same committer twice, or another view, does not count");
        p.on_commit(commit(2, 0, 0), &mut out);
        assert_eq!(out.proposals.iter().map(|x| x.sequence).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!((p.uncommitted(), p.in_flight()), (1, 2), "the threshold still sits at 0");
    }

    /// The bound holds whatever order commits arrive in, counted from the proposals and commits
    /// themselves (not from the proposer's own counters): never more than `max_in_flight`
    /// proposed instances without f+1 commits, and every request is proposed in the end.
    #[test]
    fn never_more_than_max_in_flight_uncommitted() {
        for bound in [1u64, 2, 3, 8] {
            let params = Params { max_in_flight: Some(bound), ..params(8) };
            let mut p = Proposer::new(0, &params);
            let mut out = Outbox::default();
            let mut votes: BTreeMap<u64, u32> = BTreeMap::new();
            for q in 1..=8 {
                p.on_request(request(q), &mut out);
            }
            for step in 0..100 {
                let undecided: Vec<u64> = out
                    .proposals
                    .iter()
                    .map(|x| x.sequence)
                    .filter(|s| votes.get(s).copied().unwrap_or(0) < 2)
                    .collect();
                assert!(undecided.len() as u64 <= bound, "bound {bound}: {undecided:?} undecided");
                // Commits arrive out of order: the latest undecided instance is committed first.
                let Some(&sequence) = undecided.last() else { break };
                let vote = votes.entry(sequence).or_default();
                p.on_commit(commit(*vote, sequence, 0), &mut out);
                *vote += 1;
                assert!(step < 99, "bound {bound}: stuck with {} proposals", out.proposals.len());
            }
            assert_eq!(out.proposals.len(), 8, "bound {bound}: every request was proposed");
            assert_eq!(p.uncommitted(), 0);
        }
    }

    /// Section III-D: a full window waits until f+1 sources announce a higher threshold.
    #[test]
    fn resumes_when_the_threshold_rises() {
        let mut p = Proposer::new(0, &params(2));
        let mut out = Outbox::default();
        for q in 1..=4 {
            p.on_request(request(q), &mut out);
        }
        assert_eq!(out.proposals.len(), 2);
        p.on_stable(Stable { source: 0, sequence: 2 }, &mut out);
        assert_eq!(out.proposals.len(), 2, "one source is not enough");
        p.on_stable(Stable { source: 2, sequence: 2 }, &mut out);
        let assigned: Vec<(u64, u64)> = out.proposals.iter().map(|x| (x.sequence, x.request.number)).collect();
        assert_eq!(assigned, vec![(0, 1), (1, 2), (2, 3), (3, 4)]);
    }

    /// At most `window` requests wait for room; more are dropped, so memory stays bounded.
    #[test]
    fn the_waiting_queue_is_bounded() {
        let mut p = Proposer::new(0, &params(2));
        let mut out = Outbox::default();
        for q in 1..=10 {
            p.on_request(request(q), &mut out);
        }
        assert_eq!(out.proposals.len(), 2);
        assert_eq!((p.held(), p.dropped(), p.stalls()), (2 + 2, 6, 2));
    }

    /// Repair: a nack gets a burst of the proposals from the one it names.
    #[test]
    fn repeats_proposals_on_nack() {
        let mut p = Proposer::new(0, &params(4));
        let mut out = Outbox::default();
        p.on_request(request(1), &mut out);
        p.on_request(request(2), &mut out);
        let second = out.proposals[1].clone();
        out.proposals.clear();
        p.on_nack(Nack { executor: 2, partition: 0, view: 0, sequence: 1, fill: false }, &mut out);
        assert_eq!(out.proposals, vec![second]);
        p.on_nack(Nack { executor: 2, partition: 0, view: 0, sequence: 0, fill: false }, &mut out);
        assert_eq!(out.proposals.iter().map(|x| x.sequence).collect::<Vec<_>>(), vec![1, 0, 1], "a burst from 0");
        p.on_nack(Nack { executor: 2, partition: 0, view: 0, sequence: 3, fill: false }, &mut out);
        assert_eq!(out.proposals.len(), 3, "nothing was proposed at 3");
        p.on_nack(Nack { executor: 2, partition: 0, view: 1, sequence: 1, fill: false }, &mut out);
        assert_eq!(out.proposals.len(), 3, "addressed to another proposer");
    }

    /// Section IV: an idle partition's proposer fills the slots the merge waits for with
    /// no-ops, within its window, only when asked for its own partition and view, and not at
    /// all while requests wait.
    #[test]
    fn fills_the_slots_the_merge_waits_for() {
        let params = Params { partitions: 2, ..params(4) };
        let mut p = Proposer::new(2, &params);
        assert!(p.is_active(), "proposer 0 of partition 1 leads view 0");
        let mut out = Outbox::default();
        let fill = |partition, view, sequence| Nack { executor: 0, partition, view, sequence, fill: true };
        p.on_nack(fill(0, 0, 1), &mut out);
        assert!(out.proposals.is_empty(), "partition 0 is not this proposer's");
        p.on_nack(fill(1, 1, 1), &mut out);
        assert!(out.proposals.is_empty(), "view 1 is led by another proposer");
        p.on_nack(fill(1, 0, 1), &mut out);
        let filled: Vec<(u64, bool)> = out.proposals.iter().map(|x| (x.sequence, x.request.is_noop())).collect();
        assert_eq!(filled, vec![(0, true), (1, true)]);
        p.on_nack(fill(1, 0, 1), &mut out);
        assert_eq!(out.proposals.len(), 2, "slots already proposed are not filled again");
        p.on_nack(fill(1, 0, 9), &mut out);
        assert_eq!(out.proposals.len(), 4, "the window (4) bounds the fill");
        assert_eq!(p.filled(), 4);
        p.on_request(request(1), &mut out);
        assert_eq!(out.proposals.len(), 4, "the window is full: the request waits");
        p.on_stable(Stable { source: 0, sequence: 4 }, &mut out);
        p.on_stable(Stable { source: 1, sequence: 4 }, &mut out);
        assert_eq!(p.stable(), 2, "execution threshold 4 is slot 2 of partition 1");
        assert_eq!(out.proposals.last().map(|x| (x.sequence, x.request.number)), Some((4, 1)));
    }

    /// Figure 7's throttle: at most one proposal per `proposer_delay_us`; the host is asked to
    /// tick when the next one may go.
    #[test]
    fn the_throttle_spaces_proposals() {
        let params = Params { proposer_delay_us: 1_000, ..params(8) };
        let mut p = Proposer::new(0, &params);
        let mut out = Outbox::default();
        for q in 1..=3 {
            p.on_tuple(Tuple::Request { view: 0, request: request(q) }, 10_000, &mut out);
        }
        assert_eq!(out.proposals.len(), 1);
        assert_eq!(p.deadline_us(), Some(11_000));
        p.on_tick(10_500, &mut out);
        assert_eq!(out.proposals.len(), 1, "too early");
        p.on_tick(11_000, &mut out);
        assert_eq!(out.proposals.len(), 2);
        p.on_tick(12_000, &mut out);
        assert_eq!(out.proposals.len(), 3);
        // Nothing waits for the throttle; what is in flight is watched for a stall.
        assert_eq!(p.deadline_us(), Some(12_000 + 20_000));
    }

    /// Repair: when the window stays full and the threshold does not rise, the proposals above
    /// the threshold are sent again, with a growing pause; a rising threshold stops it.
    #[test]
    fn repeats_a_stuck_full_window_with_backoff() {
        let mut p = Proposer::new(0, &params(2)).repair_timeout_us(10);
        let mut out = Outbox::default();
        for q in 1..=3 {
            p.on_request(request(q), &mut out);
        }
        out.proposals.clear();
        p.on_tick(0, &mut out);
        p.on_tick(5, &mut out);
        assert!(out.proposals.is_empty(), "not stuck long enough");
        p.on_tick(10, &mut out);
        assert_eq!(out.proposals.iter().map(|x| x.sequence).collect::<Vec<_>>(), vec![0, 1]);
        p.on_tick(25, &mut out);
        assert_eq!(out.proposals.len(), 2, "backoff doubled to 20");
        p.on_tick(30, &mut out);
        assert_eq!(out.proposals.len(), 4);
        p.on_stable(Stable { source: 0, sequence: 1 }, &mut out);
        p.on_stable(Stable { source: 1, sequence: 1 }, &mut out);
        let proposed = out.proposals.len();
        p.on_tick(31, &mut out);
        p.on_tick(40, &mut out);
        assert_eq!(out.proposals.len(), proposed, "progress resets the timeout");
    }

    /// Repair: an idle proposer with instances in flight repeats its last proposal now and then,
    /// so that an executor that missed the last instances learns about them.
    #[test]
    fn an_idle_proposer_repeats_its_last_proposal() {
        let mut p = Proposer::new(0, &params(8)).repair_timeout_us(10);
        let mut out = Outbox::default();
        p.on_request(request(1), &mut out);
        p.on_request(request(2), &mut out);
        out.proposals.clear();
        p.on_tick(0, &mut out);
        p.on_tick(10, &mut out);
        assert_eq!(out.proposals.iter().map(|x| x.sequence).collect::<Vec<_>>(), vec![1]);
        p.on_stable(Stable { source: 0, sequence: 2 }, &mut out);
        p.on_stable(Stable { source: 1, sequence: 2 }, &mut out);
        p.on_tick(100, &mut out);
        p.on_tick(200, &mut out);
        assert_eq!(out.proposals.len(), 1, "nothing in flight above the threshold: nothing to repeat");
    }

    /// Section III-C: only proposer v mod (f+1) may propose.
    #[test]
    fn inactive_proposer_stays_silent() {
        let mut p = Proposer::new(1, &params(4));
        let mut out = Outbox::default();
        p.on_request(request(1), &mut out);
        assert!(out.proposals.is_empty());
        assert!(!p.is_active());
    }

    /// Section III-E: the new proposer waits for f+1 records, re-proposes the highest-view
    /// request of every covered slot in its view, fills gaps with no-ops, then continues.
    #[test]
    fn takes_over_from_f_plus_one_records() {
        let mut p = Proposer::new(1, &params(8));
        let mut out = Outbox::default();
        enter(&mut p, 1);
        assert!(!p.is_active(), "collecting records first");
        p.on_request(request(50), &mut out);
        assert!(out.proposals.is_empty(), "new requests wait for the take-over");
        p.on_record(record(0, 1, 2, &[(2, 0, 10), (3, 0, 11)]), &mut out);
        assert!(out.proposals.is_empty(), "one record is not enough");
        p.on_record(record(0, 1, 2, &[(2, 0, 10)]), &mut out);
        assert!(out.proposals.is_empty(), "the same committer twice is one record");
        p.on_record(record(2, 1, 2, &[(3, 0, 11), (5, 0, 13)]), &mut out);
        let proposals: Vec<(u64, u64, u64)> =
            out.proposals.iter().map(|x| (x.sequence, x.view, x.request.number)).collect();
        assert_eq!(proposals, vec![(2, 1, 10), (3, 1, 11), (4, 1, 0), (5, 1, 13), (6, 1, 50)]);
        assert!(out.proposals[2].request.is_noop(), "slot 4 is covered by no record: a no-op");
        assert!(p.is_active());
    }

    /// Section III-E: among the records for one slot, the request with the highest view wins.
    #[test]
    fn the_highest_view_wins() {
        let mut p = Proposer::new(0, &params(8));
        let mut out = Outbox::default();
        enter(&mut p, 4);
        p.on_record(record(0, 4, 0, &[(0, 1, 10)]), &mut out);
        p.on_record(record(1, 4, 0, &[(0, 3, 20)]), &mut out);
        assert_eq!(
            out.proposals.iter().map(|x| (x.sequence, x.view, x.request.number)).collect::<Vec<_>>(),
            vec![(0, 4, 20)]
        );
    }

    /// A restarted proposer never leads a view it led before (it has forgotten its sequence
    /// numbers): the simulator found one that re-proposed a slot of its old view. A higher view
    /// makes it take over through records.
    #[test]
    fn a_restarted_proposer_never_leads_its_old_view_again() {
        let mut p = Proposer::restarted(0, &params(8), Some(2));
        let mut out = Outbox::default();
        p.on_request(request(1), &mut out);
        enter(&mut p, 2);
        p.on_request(request(2), &mut out);
        p.on_record(record(0, 2, 0, &[]), &mut out);
        p.on_record(record(1, 2, 0, &[]), &mut out);
        assert!(out.proposals.is_empty() && !p.is_active(), "it led view 2 before its restart");
        enter(&mut p, 4);
        assert_eq!(p.led(), Some(4), "leading view 4 is recorded before anything is proposed");
        p.on_record(record(0, 4, 0, &[(0, 0, 7)]), &mut out);
        p.on_record(record(1, 4, 0, &[]), &mut out);
        assert_eq!(
            out.proposals.iter().map(|x| (x.sequence, x.view, x.request.number)).collect::<Vec<_>>(),
            vec![(0, 4, 7)]
        );
    }

    /// Host duty (Section III-E): the led view goes into the outbox with the first proposal of
    /// the view, once, so that the host holds that proposal until the view is durable.
    #[test]
    fn the_led_view_is_written_with_the_first_proposal_of_a_view() {
        let mut p = Proposer::new(0, &params(8));
        let mut out = Outbox::default();
        p.on_request(request(1), &mut out);
        assert_eq!((out.value, out.proposals.len()), (Some(0), 1));
        let mut out = Outbox::default();
        p.on_request(request(2), &mut out);
        assert_eq!(out.value, None, "written once per view");
        enter(&mut p, 2);
        p.on_record(record(0, 2, 0, &[]), &mut out);
        p.on_record(record(1, 2, 0, &[]), &mut out);
        p.on_request(request(3), &mut out);
        assert_eq!(out.value, Some(2));
        assert!(crate::protocol::topology::route(crate::protocol::Kind::Propose).after_persist);
    }

    /// Records for another view are ignored; leaving the view silences a proposer.
    #[test]
    fn records_of_other_views_are_ignored() {
        let mut p = Proposer::new(1, &params(8));
        let mut out = Outbox::default();
        enter(&mut p, 3);
        p.on_record(record(0, 1, 0, &[(0, 1, 10)]), &mut out);
        p.on_record(record(1, 1, 0, &[(0, 1, 10)]), &mut out);
        assert!(out.proposals.is_empty() && !p.is_active());
        enter(&mut p, 4);
        p.on_record(record(0, 4, 0, &[]), &mut out);
        p.on_record(record(1, 4, 0, &[]), &mut out);
        assert!(!p.is_active(), "view 4 belongs to proposer 0");
    }
}
