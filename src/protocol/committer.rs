//! The committer stage (Section III-C): stores sequence-number assignments and attests them.

use super::params::Params;
use super::quorum::Announced;
use super::tuple::{Commit, Propose, Request, Stable};
use super::window::Window;

/// The paper's record `d = (s, v, req)`: the most recent view in which this committer accepted a
/// proposal for `s`, and the request (Section III-E).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The sequence number `s`.
    pub sequence: u64,
    /// The view `v` of the accepted proposal.
    pub view: u64,
    /// The accepted request.
    pub request: Request,
}

/// Committer replica `k`.
///
/// It accepts a proposal only in its current view and only inside its window, stores the record,
/// and sends `<COMMIT, k, s, v, req>` to every executor. The window holds `2 * window` sequence
/// numbers above the threshold: the proposer may be one window ahead of a committer that has not
/// yet learned the latest threshold.
#[derive(Debug)]
pub struct Committer {
    id: u32,
    view: u64,
    stable: Announced,
    records: Window<Record>,
    accepted: u64,
}

impl Committer {
    /// Committer replica `id` of a deployment with `params`.
    pub fn new(id: u32, params: &Params) -> Committer {
        Committer {
            id,
            view: 0,
            stable: Announced::new(params.gc_sources(), params.quorum(), 0),
            records: Window::new(0, 2 * params.window),
            accepted: 0,
        }
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
    pub fn record(&self, sequence: u64) -> Option<&Record> {
        self.records.get(sequence)
    }

    /// A proposal: accepted in the current view inside the window, answered with a commit.
    ///
    /// A retransmitted proposal is answered again. A second, different proposal for the same
    /// sequence number in the same view cannot come from a correct proposer and is ignored.
    pub fn on_propose(&mut self, propose: Propose, out: &mut Vec<Commit>) {
        if propose.view != self.view {
            return;
        }
        let Some(record) = self.records.get_or_insert_with(propose.sequence, || Record {
            sequence: propose.sequence,
            view: propose.view,
            request: propose.request.clone(),
        }) else {
            return;
        };
        if record.view == propose.view && record.request.id() != propose.request.id() {
            return;
        }
        if record.view < propose.view {
            record.view = propose.view;
            record.request = propose.request.clone();
        }
        self.accepted += 1;
        out.push(Commit {
            committer: self.id,
            sequence: propose.sequence,
            view: propose.view,
            request: propose.request,
        });
    }

    /// A stability announcement: a rising threshold discards the records below it.
    pub fn on_stable(&mut self, stable: Stable) {
        if let Some(threshold) = self.stable.report(stable.source, stable.sequence) {
            self.records.advance(threshold);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::tuple::Command;

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

    /// Section III-C: a committer stores (s, v, req) and sends a commit for it.
    #[test]
    fn accepts_and_attests_proposals_of_its_view() {
        let mut k = committer();
        let mut out = Vec::new();
        k.on_propose(propose(0, 0, 1), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].committer, out[0].sequence, out[0].view, out[0].request.number), (2, 0, 0, 1));
        assert_eq!(k.record(0).map(|r| r.request.number), Some(1));
    }

    /// Section III-C: "a committer only accepts the proposal if it is also currently in view v".
    #[test]
    fn rejects_proposals_of_other_views() {
        let mut k = committer();
        let mut out = Vec::new();
        k.on_propose(propose(0, 1, 1), &mut out);
        assert!(out.is_empty());
        assert_eq!(k.held(), 0);
    }

    /// One proposer per view: a conflicting proposal for a taken slot is ignored.
    #[test]
    fn keeps_the_first_request_of_a_view() {
        let mut k = committer();
        let mut out = Vec::new();
        k.on_propose(propose(0, 0, 1), &mut out);
        k.on_propose(propose(0, 0, 2), &mut out);
        k.on_propose(propose(0, 0, 1), &mut out);
        assert_eq!(out.iter().map(|c| c.request.number).collect::<Vec<_>>(), vec![1, 1]);
        assert_eq!(k.record(0).map(|r| r.request.number), Some(1));
    }

    /// Section III-D: nothing outside the window is accepted; a rising threshold discards below.
    #[test]
    fn holds_only_its_window() {
        let mut k = committer();
        let mut out = Vec::new();
        k.on_propose(propose(8, 0, 1), &mut out);
        assert!(out.is_empty(), "8 is beyond twice the window of 4");
        for s in 0..8 {
            k.on_propose(propose(s, 0, s + 1), &mut out);
        }
        assert_eq!(k.held(), 8);
        k.on_stable(Stable { source: 0, sequence: 4 });
        k.on_stable(Stable { source: 1, sequence: 4 });
        assert_eq!(k.held(), 4);
        assert_eq!(k.record(3), None);
        k.on_propose(propose(3, 0, 9), &mut out);
        assert_eq!(k.held(), 4, "below the threshold is not accepted again");
    }
}
