//! The committer stage (Sections III-C and III-E): stores sequence-number assignments, attests
//! them, and hands its records to the proposer of a new view.

use serde::{Deserialize, Serialize};

use super::params::Params;
use super::quorum::Announced;
use super::replica::{Counters, Outbox, Recovered, Replica};
use super::topology::{Partition, Stage, Tuple, leader_of};
use super::tuple::{Accepted, Commit, Propose, Record, Stable, View};
use super::window::Window;

/// One entry of a committer's durable log. Replaying the log recreates everything a committer
/// promised: the view it entered and every proposal it accepted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum LogEntry {
    /// The committer entered this view (and will never accept a proposal of a lower one).
    View(u64),
    /// The committer accepted this proposal.
    Accept(Accepted),
    /// Everything below this sequence number is stable: replay starts the window here
    /// (written whenever the threshold rises, and first in a compacted log).
    Stable(u64),
}

/// Committer replica `k`.
///
/// It accepts a proposal only in its current view and only inside its window, stores the record
/// (s, v, req), and sends `<COMMIT, k, s, v, req>` to every executor. When it learns a higher
/// view it sends its records to that view's proposer, and repeats them until the proposer shows
/// up.
///
/// Host duty: every entry of [`Outbox::log`] is durable before any commit or record of the same
/// call leaves (the "amnesia" case of Section III-E: a restarted committer must not forget what
/// it accepted or which view it promised). The window holds `2 * window` sequence numbers above the threshold: the proposer may be
/// one window ahead of a committer that has not yet learned the latest threshold.
#[derive(Debug)]
pub struct Committer {
    id: u32,
    partition: Partition,
    controllers: usize,
    proposers: u64,
    view: u64,
    views: Announced,
    stable: Announced,
    records: Window<Accepted>,
    accepted: u64,
    /// A proposal of the current view arrived: its proposer has the records.
    proposer_heard: bool,
    record_sent_us: u64,
    resend_us: u64,
    /// When the last proposal arrived, and when commits were last repeated (with backoff).
    proposal_us: u64,
    repeated_us: u64,
    backoff_us: u64,
    heard_proposal: bool,
    /// Log entries written since the log was last compacted, and the bound that triggers it.
    logged: u64,
    compact_after: u64,
}

impl Committer {
    /// Committer replica `id` of a deployment with `params`.
    pub fn new(id: u32, params: &Params) -> Committer {
        Committer {
            id,
            partition: Partition::of(Stage::Committer, id, params),
            controllers: params.controllers(),
            proposers: params.proposers() as u64,
            view: 0,
            views: Announced::new(params.controllers(), params.quorum(), 0),
            stable: Announced::new(params.gc_sources(), params.quorum(), 0),
            records: Window::new(0, 2 * params.window),
            accepted: 0,
            proposer_heard: true,
            record_sent_us: 0,
            resend_us: params.view_timeout_us / 4,
            proposal_us: 0,
            repeated_us: 0,
            backoff_us: params.view_timeout_us / 4,
            heard_proposal: false,
            logged: 0,
            compact_after: 8 * params.window,
        }
    }

    /// A committer restarted with its durable log: it knows again the view it promised and
    /// every proposal it accepted, before it answers anything.
    pub fn recover(id: u32, params: &Params, log: impl IntoIterator<Item = LogEntry>) -> Committer {
        let mut committer = Committer::new(id, params);
        committer.replay_log(log.into_iter().collect());
        committer
    }

    fn replay_log(&mut self, entries: Vec<LogEntry>) {
        let base = entries.iter().filter_map(|e| if let LogEntry::Stable(s) = e { Some(*s) } else { None }).max();
        self.records.advance(base.unwrap_or(0));
        for entry in entries {
            match entry {
                LogEntry::View(view) => self.view = self.view.max(view),
                LogEntry::Accept(accepted) => self.replay(accepted),
                LogEntry::Stable(_) => {}
            }
        }
        self.proposer_heard = self.view == 0;
    }

    fn replay(&mut self, accepted: Accepted) {
        let sequence = accepted.sequence;
        if let Some(slot) = self.records.get_or_insert_with(sequence, || accepted.clone())
            && slot.view < accepted.view
        {
            *slot = accepted;
        }
    }

    /// The log entries that recreate this committer's state, for compacting its log.
    pub fn log_snapshot(&self) -> Vec<LogEntry> {
        let mut entries = vec![LogEntry::Stable(self.records.base()), LogEntry::View(self.view)];
        entries.extend(self.records.iter().map(|(_, a)| LogEntry::Accept(a.clone())));
        entries
    }

    /// This replica's index.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// This replica's current view.
    pub fn view(&self) -> u64 {
        self.view
    }

    /// Records held (state, for metrics and bounds).
    pub fn held(&self) -> usize {
        self.records.occupied()
    }

    /// Proposals accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// The record for `sequence`, if held.
    pub fn record(&self, sequence: u64) -> Option<&Accepted> {
        self.records.get(sequence)
    }

    /// A proposal: accepted in the current view inside the window, answered with a commit.
    ///
    /// A retransmitted proposal is answered again. A second, different proposal for the same
    /// sequence number in the same view cannot come from a correct proposer and is ignored.
    pub fn on_propose(&mut self, propose: Propose, out: &mut Outbox) {
        if self.partition.own(propose.proposer, self.proposers as usize).is_none() {
            return;
        }
        if propose.view > self.view {
            // Its proposer entered the view after f+1 controllers announced it: this committer
            // missed the announcements. It enters the view as on an announcement (promise and
            // record first), then accepts.
            self.enter(propose.view, 0, out);
        }
        if propose.view != self.view || !self.records.contains(propose.sequence) {
            return;
        }
        self.proposer_heard = true;
        self.heard_proposal = true;
        let accepted = Accepted { sequence: propose.sequence, view: propose.view, request: propose.request };
        match self.records.get(accepted.sequence) {
            Some(held) if held.view == accepted.view && held.request.id() != accepted.request.id() => return,
            Some(held) if held.view == accepted.view => {}
            _ => {
                self.log(out, LogEntry::Accept(accepted.clone()));
                if let Some(slot) = self.records.get_or_insert_with(accepted.sequence, || accepted.clone()) {
                    *slot = accepted.clone();
                }
            }
        }
        self.accepted += 1;
        let Accepted { sequence, view, request } = accepted;
        out.commits.push(Commit { committer: self.id, sequence, view, request });
    }

    /// A stability announcement: a rising threshold discards the records below it, and is
    /// logged, so that a restarted committer replays its records into the right window. The
    /// threshold is in execution numbering; the records are in this partition's (Section IV).
    pub fn on_stable(&mut self, stable: Stable, out: &mut Outbox) {
        if let Some(threshold) = self.stable.report(stable.source, stable.sequence).map(|s| self.partition.stable(s))
            && threshold > self.records.base()
        {
            self.records.advance(threshold);
            self.log(out, LogEntry::Stable(threshold));
        }
    }

    /// A view announcement (Section III-E): on entering a higher view the committer promises it
    /// (logged) and sends its records to the new proposer.
    pub fn on_view(&mut self, view: View, now_us: u64, out: &mut Outbox) {
        let Some(controller) = self.partition.own(view.controller, self.controllers) else { return };
        let Some(adopted) = self.views.report(controller, view.view) else { return };
        if adopted > self.view {
            self.enter(adopted, now_us, out);
        }
    }

    fn enter(&mut self, view: u64, now_us: u64, out: &mut Outbox) {
        self.view = view;
        self.proposer_heard = false;
        self.log(out, LogEntry::View(view));
        self.send_record(now_us, out);
    }

    /// Logs `entry` (host duty: durable before the call's commits and records leave).
    fn log(&mut self, out: &mut Outbox, entry: LogEntry) {
        self.logged += 1;
        out.log.push(entry);
    }

    fn send_record(&mut self, now_us: u64, out: &mut Outbox) {
        self.record_sent_us = now_us;
        let records = self.records.iter().map(|(_, a)| a.clone()).collect();
        out.records.push(Record { committer: self.id, view: self.view, stable: self.records.base(), records });
    }

    /// The proposer of this committer's current view, by its index within the partition.
    pub fn proposer_of_view(&self) -> u32 {
        leader_of(self.view, self.proposers as usize)
    }
}

impl Replica for Committer {
    fn stage(&self) -> Stage {
        Stage::Committer
    }

    fn id(&self) -> u32 {
        self.id
    }

    fn on_tuple(&mut self, tuple: Tuple, now_us: u64, out: &mut Outbox) -> bool {
        match tuple {
            Tuple::Propose(propose) => self.on_propose(propose, out),
            Tuple::Stable(stable) => self.on_stable(stable, out),
            Tuple::View(view) => self.on_view(view, now_us, out),
            _ => return false,
        }
        true
    }

    /// Time passed: repeat the record while the new view's proposer has not proposed anything,
    /// in case the record was lost or the proposer restarted. When no proposal has arrived for
    /// a while, repeat the commit of this view's newest record (with backoff): an executor
    /// that missed the last instances catches up even when the proposer is gone and no new
    /// work would start a view change. Once the log holds more than eight windows of
    /// entries, asks the host to compact it.
    fn on_tick(&mut self, now_us: u64, out: &mut Outbox) {
        if self.logged > self.compact_after {
            self.logged = 0;
            out.compact = Some(self.log_snapshot());
        }
        if !self.proposer_heard && now_us.saturating_sub(self.record_sent_us) >= self.resend_us {
            self.send_record(now_us, out);
        }
        if std::mem::take(&mut self.heard_proposal) {
            self.proposal_us = now_us;
            self.backoff_us = self.resend_us;
            return;
        }
        let quiet = now_us.saturating_sub(self.proposal_us) >= self.resend_us;
        if quiet && now_us.saturating_sub(self.repeated_us) >= self.backoff_us {
            self.repeated_us = now_us;
            self.backoff_us = (self.backoff_us * 2).min(self.resend_us * 32);
            // The newest commit is enough: an executor that lacks it learns the tail, and one
            // that lacks an earlier one sees the gap and repairs it (nack, or state transfer).
            let view = self.view;
            if let Some((_, accepted)) = self.records.iter().filter(|(_, a)| a.view == view).last() {
                let Accepted { sequence, view, request } = accepted.clone();
                out.commits.push(Commit { committer: self.id, sequence, view, request });
            }
        }
    }

    /// Its record for a proposer that has not heard it; the next repetition of its commits while
    /// proposals are quiet; the next epoch after a proposal or when the log needs compacting.
    fn deadline_us(&self) -> Option<u64> {
        let record = (!self.proposer_heard).then(|| self.record_sent_us + self.resend_us);
        let now = (self.heard_proposal || self.logged > self.compact_after).then_some(0);
        let repeat = (self.records.occupied() > 0)
            .then(|| (self.proposal_us + self.resend_us).max(self.repeated_us + self.backoff_us));
        [record, now, repeat].into_iter().flatten().min()
    }

    fn resume(&mut self, recovered: Recovered) -> Result<(), String> {
        match recovered {
            Recovered::Log(entries) => self.replay_log(entries),
            Recovered::Fresh => {}
            other => return Err(format!("a committer resumes from its record log, not {other:?}")),
        }
        Ok(())
    }

    fn counters(&self) -> Counters {
        Counters { count: self.accepted, next: self.view, held: self.held() as u64, ..Counters::default() }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::tuple::{Command, Request};

    fn propose(sequence: u64, view: u64, number: u64) -> Propose {
        let command = Command::new(3, number, vec![]);
        Propose {
            proposer: 0,
            sequence,
            view,
            request: Request { source: 0, number, commands: Arc::from(vec![command]) },
        }
    }

    fn committer() -> Committer {
        Committer::new(2, &Params { window: 4, checkpoint_interval: 2, ..Params::default() })
    }

    fn enter(k: &mut Committer, view: u64, out: &mut Outbox) {
        k.on_view(View { controller: 0, view }, 0, out);
        k.on_view(View { controller: 1, view }, 0, out);
    }

    /// Section III-C: a committer stores (s, v, req) and sends a commit for it.
    #[test]
    fn accepts_and_attests_proposals_of_its_view() {
        let mut k = committer();
        let mut out = Outbox::default();
        k.on_propose(propose(0, 0, 1), &mut out);
        assert_eq!(out.commits.len(), 1);
        let c = &out.commits[0];
        assert_eq!((c.committer, c.sequence, c.view, c.request.number), (2, 0, 0, 1));
        assert_eq!(k.record(0).map(|r| r.request.number), Some(1));
        assert_eq!(out.log.len(), 1, "the acceptance is logged before the commit goes out");
    }

    /// Section III-C: "a committer only accepts the proposal if it is also currently in view v";
    /// a proposal of a higher view proves that view, and the committer enters it first.
    #[test]
    fn accepts_only_proposals_of_its_view() {
        let mut k = committer();
        let mut out = Outbox::default();
        enter(&mut k, 2, &mut out);
        k.on_propose(propose(1, 1, 1), &mut out);
        assert!(out.commits.is_empty(), "a lower view after promising a higher one");
        out = Outbox::default();
        k.on_propose(propose(1, 3, 1), &mut out);
        assert_eq!(k.view(), 3);
        assert_eq!(out.log.first(), Some(&LogEntry::View(3)), "the promise is logged first");
        assert_eq!(out.records.len(), 1, "the new proposer gets the records");
        assert_eq!(out.commits.len(), 1);
    }

    /// One proposer per view: a conflicting proposal for a taken slot is ignored.
    #[test]
    fn keeps_the_first_request_of_a_view() {
        let mut k = committer();
        let mut out = Outbox::default();
        k.on_propose(propose(0, 0, 1), &mut out);
        k.on_propose(propose(0, 0, 2), &mut out);
        k.on_propose(propose(0, 0, 1), &mut out);
        assert_eq!(out.commits.iter().map(|c| c.request.number).collect::<Vec<_>>(), vec![1, 1]);
        assert_eq!(k.record(0).map(|r| r.request.number), Some(1));
    }

    /// Section III-D: nothing outside the window is accepted; a rising threshold discards below.
    #[test]
    fn holds_only_its_window() {
        let mut k = committer();
        let mut out = Outbox::default();
        k.on_propose(propose(8, 0, 1), &mut out);
        assert!(out.commits.is_empty(), "8 is beyond twice the window of 4");
        for s in 0..8 {
            k.on_propose(propose(s, 0, s + 1), &mut out);
        }
        assert_eq!(k.held(), 8);
        k.on_stable(Stable { source: 0, sequence: 4 }, &mut out);
        k.on_stable(Stable { source: 1, sequence: 4 }, &mut out);
        assert_eq!(k.held(), 4);
        assert_eq!(k.record(3), None);
        k.on_propose(propose(3, 0, 9), &mut out);
        assert_eq!(k.held(), 4, "below the threshold is not accepted again");
    }

    /// Section III-E: entering a higher view sends every record to the new proposer, logged
    /// first; the view is adopted only with f+1 controllers.
    #[test]
    fn a_new_view_sends_the_records() {
        let mut k = committer();
        let mut out = Outbox::default();
        k.on_propose(propose(0, 0, 1), &mut out);
        k.on_propose(propose(1, 0, 2), &mut out);
        out = Outbox::default();
        k.on_view(View { controller: 0, view: 1 }, 0, &mut out);
        assert!(out.records.is_empty(), "one controller is not enough");
        k.on_view(View { controller: 2, view: 1 }, 0, &mut out);
        assert_eq!(out.log, vec![LogEntry::View(1)]);
        let record = &out.records[0];
        assert_eq!((record.committer, record.view, record.records.len()), (2, 1, 2));
        assert_eq!(k.proposer_of_view(), 1);
        // Repeated until the new proposer proposes something.
        k.on_tick(1_000_000, &mut out);
        assert_eq!(out.records.len(), 2);
        k.on_propose(propose(2, 1, 3), &mut out);
        k.on_tick(1_000_001, &mut out);
        k.on_tick(2_000_000, &mut out);
        assert_eq!(out.records.len(), 2);
    }

    /// Repair: without proposals for a while, the commits of this view's records are repeated,
    /// with a growing pause; a new proposal stops it.
    #[test]
    fn repeats_commits_when_no_proposal_comes() {
        let mut k =
            Committer::new(0, &Params { window: 4, checkpoint_interval: 2, view_timeout_us: 400, ..Params::default() });
        let mut out = Outbox::default();
        k.on_propose(propose(0, 0, 1), &mut out);
        k.on_tick(0, &mut out);
        out.commits.clear();
        k.on_tick(50, &mut out);
        assert!(out.commits.is_empty(), "not quiet long enough");
        k.on_tick(100, &mut out);
        assert_eq!(out.commits.len(), 1);
        k.on_tick(150, &mut out);
        assert_eq!(out.commits.len(), 1, "backoff doubled");
        k.on_tick(300, &mut out);
        assert_eq!(out.commits.len(), 2);
    }

    /// Section III-E, the amnesia case: a committer restarted from its log remembers its view
    /// and its records.
    #[test]
    fn recovers_its_promises_from_the_log() {
        let params = Params { window: 4, checkpoint_interval: 2, ..Params::default() };
        let mut k = Committer::new(1, &params);
        let mut out = Outbox::default();
        k.on_propose(propose(0, 0, 1), &mut out);
        enter(&mut k, 3, &mut out);
        k.on_propose(propose(1, 3, 2), &mut out);
        let restarted = Committer::recover(1, &params, out.log.clone());
        assert_eq!(restarted.view(), 3);
        assert_eq!(restarted.record(0).map(|r| r.request.number), Some(1));
        assert_eq!(restarted.record(1).map(|r| (r.view, r.request.number)), Some((3, 2)));
        let compacted = Committer::recover(1, &params, k.log_snapshot());
        assert_eq!((compacted.view(), compacted.held()), (3, 2));
    }

    /// The amnesia case found by the simulator: records far above zero survive a restart,
    /// because the log carries the threshold the window starts at.
    #[test]
    fn recovers_records_beyond_the_first_window() {
        let params = Params { window: 4, checkpoint_interval: 2, ..Params::default() };
        let mut k = Committer::new(1, &params);
        let mut out = Outbox::default();
        for s in (0..40).step_by(2) {
            k.on_stable(Stable { source: 0, sequence: s }, &mut out);
            k.on_stable(Stable { source: 1, sequence: s }, &mut out);
            k.on_propose(propose(s, 0, s + 1), &mut out);
            k.on_propose(propose(s + 1, 0, s + 2), &mut out);
        }
        let restarted = Committer::recover(1, &params, out.log.clone());
        assert_eq!(restarted.record(39).map(|r| r.request.number), Some(40));
        assert_eq!(restarted.record(37), None, "below the threshold is forgotten");
    }
}
