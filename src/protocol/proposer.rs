//! The proposer stage (Section III-C): assigns sequence numbers to requests.

use std::collections::VecDeque;

use super::mutation::{self, Mutation};
use super::params::Params;
use super::quorum::Announced;
use super::tuple::{Nack, Propose, Request, Stable};
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
#[derive(Debug)]
pub struct Proposer {
    id: u32,
    proposers: u64,
    window: u64,
    view: u64,
    next_sequence: u64,
    stable: Announced,
    waiting: VecDeque<Request>,
    /// The proposals of this view above the threshold, kept to answer [`Nack`]s.
    sent: Window<Propose>,
    in_flight_max: u64,
    proposed: u64,
    repeated: u64,
    stalls: u64,
    dropped: u64,
    repair_timeout_us: u64,
    /// When the threshold last rose (or the window last had room).
    progress_us: u64,
    /// When the proposals above the threshold were last repeated, and the current backoff.
    repeated_us: u64,
    backoff_us: u64,
    /// The threshold rose since the last tick.
    progressed: bool,
    mutation: Option<Mutation>,
}

impl Proposer {
    /// Proposer replica `id` of a deployment with `params`.
    pub fn new(id: u32, params: &Params) -> Proposer {
        Proposer {
            id,
            proposers: params.proposers() as u64,
            window: params.window,
            view: 0,
            next_sequence: 0,
            stable: Announced::new(params.gc_sources(), params.quorum(), 0),
            waiting: VecDeque::new(),
            sent: Window::new(0, params.window),
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
            mutation: None,
        }
    }

    /// How long a full window may stay without a rising threshold before the proposals above
    /// the threshold are sent again (doubling on each further attempt, up to 50 times).
    pub fn repair_timeout_us(mut self, timeout_us: u64) -> Self {
        self.repair_timeout_us = timeout_us;
        self.backoff_us = timeout_us;
        self
    }

    /// Breaks this replica on purpose (tests of the simulator only).
    #[cfg(feature = "mutations")]
    pub fn mutate(mut self, mutation: Mutation) -> Self {
        self.mutation = Some(mutation);
        self
    }

    /// True if this replica is the active proposer of its current view.
    pub fn is_active(&self) -> bool {
        self.view % self.proposers == self.id as u64
    }

    /// The stability threshold this replica adopted.
    pub fn stable(&self) -> u64 {
        self.stable.adopted()
    }

    /// Proposed instances not yet below the stability threshold.
    pub fn in_flight(&self) -> u64 {
        self.next_sequence - self.stable().min(self.next_sequence)
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

    /// Requests dropped because `window` requests were already waiting (their clients
    /// retransmit).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Proposals sent again because an executor asked.
    pub fn repeated(&self) -> u64 {
        self.repeated
    }

    /// A request from a source: proposed at once if the window has room, otherwise it waits.
    /// At most `window` requests wait; more are dropped (memory stays bounded; their clients
    /// retransmit). An inactive proposer ignores requests (sources send to the active one).
    pub fn on_request(&mut self, request: Request, out: &mut Vec<Propose>) {
        if !self.is_active() {
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
    pub fn on_stable(&mut self, stable: Stable, out: &mut Vec<Propose>) {
        if let Some(threshold) = self.stable.report(stable.source, stable.sequence) {
            self.sent.advance(threshold);
            self.progressed = true;
            self.propose_waiting(out);
        }
    }

    /// Time passed. Instances in flight without progress (no new proposal, no rising threshold)
    /// for a timeout may be stuck where no executor can tell: when every instance at the top of
    /// a full window was lost there is no later instance to reveal the gap, and after the load
    /// stops a lagging executor sees nothing at all. So the proposer repeats, with exponential
    /// backoff: every proposal above the threshold when the window is full, otherwise its last
    /// proposal, which shows a lagging executor what it misses (it then nacks the gap).
    pub fn on_tick(&mut self, now_us: u64, out: &mut Vec<Propose>) {
        if mutation::applies(self.mutation, Mutation::ProposerNeverRepeats) {
            return;
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
        for sequence in first..self.next_sequence {
            if let Some(propose) = self.sent.get(sequence) {
                self.repeated += 1;
                out.push(propose.clone());
            }
        }
    }

    /// An executor waits for `sequence`: send the proposal again if this replica made it.
    pub fn on_nack(&mut self, nack: Nack, out: &mut Vec<Propose>) {
        if nack.to != self.id || !self.is_active() {
            return;
        }
        // A lagging executor usually misses a run of instances: repeat a burst from the one it
        // names, so that it does not need one nack (and one timeout) per instance.
        let end = self.next_sequence.min(nack.sequence + NACK_BURST);
        for sequence in nack.sequence..end {
            if let Some(propose) = self.sent.get(sequence) {
                self.repeated += 1;
                out.push(propose.clone());
            }
        }
    }

    fn propose_waiting(&mut self, out: &mut Vec<Propose>) {
        while self.next_sequence < self.stable() + self.window {
            let Some(request) = self.waiting.pop_front() else { break };
            let propose = Propose { proposer: self.id, sequence: self.next_sequence, view: self.view, request };
            if let Some(slot) = self.sent.get_or_insert_with(propose.sequence, || propose.clone()) {
                *slot = propose.clone();
            }
            out.push(propose);
            self.progressed = true;
            self.next_sequence += 1;
            self.proposed += 1;
            self.in_flight_max = self.in_flight_max.max(self.in_flight());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::tuple::Command;

    fn request(number: u64) -> Request {
        let command = Command::new(9, number, vec![]);
        Request { source: 0, number, commands: Arc::from(vec![command]) }
    }

    fn params(window: u64) -> Params {
        Params { window, checkpoint_interval: window.min(4), ..Params::default() }
    }

    /// Section III-C: the active proposer assigns increasing sequence numbers in its view and
    /// does not wait for earlier instances before proposing the next (pipelining).
    #[test]
    fn pipelines_up_to_the_window() {
        let mut p = Proposer::new(0, &params(4));
        let mut out = Vec::new();
        for q in 1..=6 {
            p.on_request(request(q), &mut out);
        }
        let sequences: Vec<u64> = out.iter().map(|x| x.sequence).collect();
        assert_eq!(sequences, vec![0, 1, 2, 3], "four instances in flight at once, then the window is full");
        assert!(out.iter().all(|x| x.view == 0 && x.proposer == 0));
        assert_eq!(p.in_flight_max(), 4);
        assert_eq!(p.held(), 2 + 4);
    }

    /// Section III-D: a full window waits until f+1 sources announce a higher threshold.
    #[test]
    fn resumes_when_the_threshold_rises() {
        let mut p = Proposer::new(0, &params(2));
        let mut out = Vec::new();
        for q in 1..=4 {
            p.on_request(request(q), &mut out);
        }
        assert_eq!(out.len(), 2);
        p.on_stable(Stable { source: 0, sequence: 2 }, &mut out);
        assert_eq!(out.len(), 2, "one source is not enough");
        p.on_stable(Stable { source: 2, sequence: 2 }, &mut out);
        assert_eq!(
            out.iter().map(|x| (x.sequence, x.request.number)).collect::<Vec<_>>(),
            vec![(0, 1), (1, 2), (2, 3), (3, 4)]
        );
    }

    /// At most `window` requests wait for room; more are dropped, so memory stays bounded.
    #[test]
    fn the_waiting_queue_is_bounded() {
        let mut p = Proposer::new(0, &params(2));
        let mut out = Vec::new();
        for q in 1..=10 {
            p.on_request(request(q), &mut out);
        }
        assert_eq!(out.len(), 2);
        assert_eq!((p.held(), p.dropped(), p.stalls()), (2 + 2, 6, 2));
    }

    /// Repair: a nack for an instance this proposer made gets the same proposal again.
    #[test]
    fn repeats_a_proposal_on_nack() {
        let mut p = Proposer::new(0, &params(4));
        let mut out = Vec::new();
        p.on_request(request(1), &mut out);
        p.on_request(request(2), &mut out);
        let first = out[1].clone();
        out.clear();
        p.on_nack(Nack { executor: 2, to: 0, sequence: 1 }, &mut out);
        assert_eq!(out, vec![first]);
        p.on_nack(Nack { executor: 2, to: 0, sequence: 0 }, &mut out);
        assert_eq!(out.iter().map(|x| x.sequence).collect::<Vec<_>>(), vec![1, 0, 1], "a burst from 0");
        p.on_nack(Nack { executor: 2, to: 0, sequence: 3 }, &mut out);
        assert_eq!(out.len(), 3, "nothing was proposed at 3");
        p.on_nack(Nack { executor: 2, to: 1, sequence: 1 }, &mut out);
        assert_eq!(out.len(), 3, "addressed to another proposer");
    }

    /// Repair: when the window stays full and the threshold does not rise, the proposals above
    /// the threshold are sent again, with a growing pause; a rising threshold stops it.
    #[test]
    fn repeats_a_stuck_full_window_with_backoff() {
        let mut p = Proposer::new(0, &params(2)).repair_timeout_us(10);
        let mut out = Vec::new();
        for q in 1..=3 {
            p.on_request(request(q), &mut out);
        }
        out.clear();
        p.on_tick(0, &mut out);
        p.on_tick(5, &mut out);
        assert!(out.is_empty(), "not stuck long enough");
        p.on_tick(10, &mut out);
        assert_eq!(out.iter().map(|x| x.sequence).collect::<Vec<_>>(), vec![0, 1]);
        p.on_tick(25, &mut out);
        assert_eq!(out.len(), 2, "backoff doubled to 20");
        p.on_tick(30, &mut out);
        assert_eq!(out.len(), 4);
        p.on_stable(Stable { source: 0, sequence: 1 }, &mut out);
        p.on_stable(Stable { source: 1, sequence: 1 }, &mut out);
        let proposed = out.len();
        p.on_tick(31, &mut out);
        p.on_tick(40, &mut out);
        assert_eq!(out.len(), proposed, "progress resets the timeout");
    }

    /// Repair: an idle proposer with instances in flight repeats its last proposal now and then,
    /// so that an executor that missed the last instances learns about them.
    #[test]
    fn an_idle_proposer_repeats_its_last_proposal() {
        let mut p = Proposer::new(0, &params(8)).repair_timeout_us(10);
        let mut out = Vec::new();
        p.on_request(request(1), &mut out);
        p.on_request(request(2), &mut out);
        out.clear();
        p.on_tick(0, &mut out);
        p.on_tick(10, &mut out);
        assert_eq!(out.iter().map(|x| x.sequence).collect::<Vec<_>>(), vec![1]);
        p.on_stable(Stable { source: 0, sequence: 2 }, &mut out);
        p.on_stable(Stable { source: 1, sequence: 2 }, &mut out);
        p.on_tick(100, &mut out);
        p.on_tick(200, &mut out);
        assert_eq!(out.len(), 1, "nothing in flight above the threshold: nothing to repeat");
    }

    /// Section III-C: only proposer v mod (f+1) may propose.
    #[test]
    fn inactive_proposer_stays_silent() {
        let mut p = Proposer::new(1, &params(4));
        let mut out = Vec::new();
        p.on_request(request(1), &mut out);
        assert!(out.is_empty());
        assert!(!p.is_active());
    }
}
