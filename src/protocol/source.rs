//! The request source stage (Section III-C): wraps client commands into numbered requests and
//! sees them through to execution.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::mutation::{self, Mutation};
use super::params::Params;
use super::quorum::Announced;
use super::replica::{Counters, Outbox, Recovered, Repeat, Replica};
use super::topology::{Partition, Stage, Tuple, leader_of};
use super::tuple::{Command, Reply, Request, Target, View};

/// Request numbers carry the source's incarnation in their high bits, so that a restarted
/// source never reuses a number.
pub const INCARNATION_SHIFT: u32 = 40;

/// A request that has not been answered completely yet.
#[derive(Debug)]
struct Unanswered {
    request: Request,
    commands_left: usize,
    /// One bit per command: answered.
    answered: Vec<u64>,
    sent_us: u64,
}

impl Unanswered {
    /// Marks the command at `index` answered if it is `(client, timestamp)`; true if it was
    /// not before.
    fn answer(&mut self, index: usize, client: u64, timestamp: u64) -> bool {
        let names = self.request.commands.get(index).is_some_and(|c| (c.client, c.timestamp) == (client, timestamp));
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        if !names || self.answered[word] & bit != 0 {
            return false;
        }
        self.answered[word] |= bit;
        self.commands_left -= 1;
        true
    }
}

/// Request source replica `r`: numbers requests `<REQUEST, r, q, cmds>` and sends them to the
/// active proposer of its current view (each request goes out with the view it is for).
///
/// Commands are batched (Section VI-B): a request is sent when it holds `batch_size` commands,
/// or on a tick once its oldest command waited `batch_timeout_us`. With a timeout of zero a
/// partial batch goes out at every tick, that is whenever the host has drained its input: the
/// batch then holds what arrived while the previous one was being sent, which keeps latency low
/// under light load and batches large under heavy load.
///
/// The source sees the replies to its commands (its reply sink is next to it) and keeps every
/// request until each of its commands is answered. It sends an unanswered request again to the
/// proposer of a new view at once (Section III-E), and to the current proposer after half a view
/// timeout. It reports the highest request number it assigned (`Target`) to the controllers.
#[derive(Debug)]
pub struct RequestSource {
    id: u32,
    partition: Partition,
    controllers: usize,
    proposers: u64,
    batch_size: usize,
    batch_timeout_us: u64,
    view: u64,
    views: Announced,
    incarnation: u64,
    counter: u64,
    batch: Vec<Command>,
    batch_started_us: u64,
    unanswered: BTreeMap<u64, Unanswered>,
    unanswered_max: usize,
    resend_us: u64,
    /// Progress reports to the controllers (Section III-E).
    report: Repeat,
    /// When the oldest unanswered request is due for resending (as of the last tick).
    resend_at_us: Option<u64>,
    resent: u64,
    mutation: Option<Mutation>,
}

impl RequestSource {
    /// Source replica `id` of a deployment with `params`, in its first incarnation.
    pub fn new(id: u32, params: &Params) -> RequestSource {
        RequestSource {
            id,
            partition: Partition::of(Stage::Source, id, params),
            controllers: params.controllers(),
            proposers: params.proposers() as u64,
            batch_size: params.batch_size,
            batch_timeout_us: params.batch_timeout_us,
            view: 0,
            views: Announced::new(params.controllers(), params.quorum(), 0),
            incarnation: 0,
            counter: 0,
            batch: Vec::with_capacity(params.batch_size),
            batch_started_us: 0,
            unanswered: BTreeMap::new(),
            unanswered_max: 4 * params.window as usize,
            resend_us: params.view_timeout_us / 2,
            report: Repeat::new(params.report_interval_us()),
            resend_at_us: None,
            resent: 0,
            mutation: None,
        }
    }

    /// The same source after its `incarnation`-th restart: its request numbers continue above
    /// every number an earlier incarnation used.
    pub fn incarnation(mut self, incarnation: u64) -> Self {
        self.incarnation = incarnation;
        self
    }

    /// Breaks this replica on purpose (tests of the simulator only).
    #[cfg(feature = "mutations")]
    pub fn mutate(mut self, mutation: Mutation) -> Self {
        self.mutation = Some(mutation);
        self
    }

    /// This replica's index.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Commands waiting in the current batch plus requests awaiting answers (state held).
    pub fn held(&self) -> usize {
        self.batch.len() + self.unanswered.len()
    }

    /// Requests sent again (timeouts and view changes).
    pub fn resent(&self) -> u64 {
        self.resent
    }

    /// The highest request number assigned in this incarnation (`q` of TARGET), 0 if none.
    pub fn highest_number(&self) -> u64 {
        if self.counter == 0 { 0 } else { (self.incarnation << INCARNATION_SHIFT) | self.counter }
    }

    /// The proposer that requests go to: p = v mod (f+1) (Section III-C), by its index within
    /// this source's partition.
    pub fn active_proposer(&self) -> u32 {
        leader_of(self.view, self.proposers as usize)
    }

    /// Accepts a client command; emits a request once the batch is full.
    pub fn on_command(&mut self, command: Command, now_us: u64, out: &mut Outbox) {
        if self.batch.is_empty() {
            self.batch_started_us = now_us;
        }
        self.batch.push(command);
        if self.batch.len() >= self.batch_size {
            self.flush(now_us, out);
        }
    }

    /// A reply to one of this source's commands: a request whose commands are all answered
    /// is done. Duplicate replies (from the other executors) are ignored, and so is a reply
    /// that does not name the command at its place (from an earlier incarnation, say).
    pub fn on_reply(&mut self, reply: &Reply) {
        if reply.source != self.id {
            return;
        }
        let Some(entry) = self.unanswered.get_mut(&reply.request) else { return };
        if entry.answer(reply.index as usize, reply.client, reply.timestamp) && entry.commands_left == 0 {
            self.unanswered.remove(&reply.request);
        }
    }

    /// A view announcement: on a new view, send every unanswered request to its proposer.
    pub fn on_view(&mut self, view: View, now_us: u64, out: &mut Outbox) {
        let Some(controller) = self.partition.own(view.controller, self.controllers) else { return };
        let Some(adopted) = self.views.report(controller, view.view) else { return };
        if adopted > self.view {
            self.view = adopted;
            self.resend(now_us, 0, out);
        }
    }

    /// When the host should tick next, if a partial batch is waiting.
    pub fn next_deadline_us(&self) -> Option<u64> {
        (!self.batch.is_empty()).then(|| self.batch_started_us + self.batch_timeout_us)
    }

    fn resend(&mut self, now_us: u64, older_than_us: u64, out: &mut Outbox) {
        let mut oldest_us = None::<u64>;
        for entry in self.unanswered.values_mut() {
            if now_us.saturating_sub(entry.sent_us) >= older_than_us {
                entry.sent_us = now_us;
                self.resent += 1;
                out.requests.push((self.view, entry.request.clone()));
            }
            oldest_us = Some(oldest_us.map_or(entry.sent_us, |o| o.min(entry.sent_us)));
        }
        self.resend_at_us = oldest_us.map(|oldest| oldest + older_than_us);
    }

    fn flush(&mut self, now_us: u64, out: &mut Outbox) {
        if mutation::applies(self.mutation, Mutation::SourceNeverFlushes) {
            return;
        }
        let commands: Arc<[Command]> =
            Arc::from(std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_size)));
        self.counter += 1;
        let number = self.highest_number();
        let request = Request { source: self.id, number, commands };
        self.track(&request, now_us);
        out.requests.push((self.view, request));
    }

    /// Remembers a request until it is answered; the oldest is forgotten if too many are
    /// unanswered (memory stays bounded; its clients retransmit).
    fn track(&mut self, request: &Request, now_us: u64) {
        if self.unanswered.len() >= self.unanswered_max {
            self.unanswered.pop_first();
        }
        let commands_left = request.commands.len();
        let answered = vec![0; commands_left.div_ceil(64)];
        let entry = Unanswered { request: request.clone(), commands_left, answered, sent_us: now_us };
        self.unanswered.insert(request.number, entry);
    }
}

impl Replica for RequestSource {
    fn stage(&self) -> Stage {
        Stage::Source
    }

    fn id(&self) -> u32 {
        self.id
    }

    fn on_tuple(&mut self, tuple: Tuple, now_us: u64, out: &mut Outbox) -> bool {
        match tuple {
            Tuple::Command(submit) => self.on_command(submit.command, now_us, out),
            Tuple::Reply(reply) | Tuple::Forwarded { reply, .. } => self.on_reply(&reply),
            Tuple::View(view) => self.on_view(view, now_us, out),
            _ => return false,
        }
        true
    }

    /// Time passed: send a partial batch that waited long enough, resend requests unanswered
    /// for half a view timeout, report progress.
    fn on_tick(&mut self, now_us: u64, out: &mut Outbox) {
        if !self.batch.is_empty() && now_us.saturating_sub(self.batch_started_us) >= self.batch_timeout_us {
            self.flush(now_us, out);
        }
        self.resend(now_us, self.resend_us, out);
        // Outstanding work is reported at the base interval: controllers judge it by fresh reports.
        let key = self.unanswered.is_empty().then(|| self.highest_number());
        if self.report.due(now_us, key) {
            out.targets.push(Target { source: self.id, number: self.highest_number() });
        }
    }

    /// Storage counts the source's starts; this start numbers its requests above every earlier
    /// one.
    fn resume(&mut self, recovered: Recovered) -> Result<(), String> {
        match recovered {
            Recovered::Value(Some(incarnation)) => {
                self.incarnation = incarnation;
                Ok(())
            }
            Recovered::Fresh => Ok(()),
            other => Err(format!("a request source resumes from its incarnation count, not {other:?}")),
        }
    }

    /// The batch timeout, the next resend of an unanswered request, the next progress report.
    fn deadline_us(&self) -> Option<u64> {
        let resend = self.resend_at_us.filter(|_| !self.unanswered.is_empty());
        let report = self.report.next_us();
        [self.next_deadline_us(), resend, Some(report)].into_iter().flatten().min()
    }

    fn counters(&self) -> Counters {
        Counters {
            next: self.highest_number() + 1,
            repairs: self.resent,
            held: self.held() as u64,
            ..Counters::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tuple::Outcome;

    fn command(t: u64) -> Command {
        Command::new(1, t, vec![t as u8])
    }

    fn source(batch_size: usize, batch_timeout_us: u64) -> RequestSource {
        RequestSource::new(1, &Params { batch_size, batch_timeout_us, view_timeout_us: 1_000, ..Params::default() })
    }

    /// The reply to command `timestamp`, which a source of batch size 1 sent as request
    /// `timestamp`.
    fn reply(timestamp: u64) -> Reply {
        let (request, index, outcome) = (timestamp, 0, Outcome::Executed);
        Reply { executor: 0, source: 1, request, index, client: 1, timestamp, outcome, result: vec![] }
    }

    /// Section III-C: requests carry the source id and increasing numbers q.
    #[test]
    fn numbers_requests_in_order() {
        let mut s = source(1, 0);
        let mut out = Outbox::default();
        for t in 1..=3 {
            s.on_command(command(t), 0, &mut out);
        }
        let numbers: Vec<(u32, u32, u64)> =
            out.requests.iter().map(|(v, r)| (leader_of(*v, 2), r.source, r.number)).collect();
        assert_eq!(numbers, vec![(0, 1, 1), (0, 1, 2), (0, 1, 3)]);
        assert_eq!(s.highest_number(), 3);
    }

    /// Section VI-B: a full batch goes out at once; a partial one after the timeout.
    #[test]
    fn batches_by_size_then_by_timeout() {
        let mut s = source(3, 100);
        let mut out = Outbox::default();
        for t in 1..=4 {
            s.on_command(command(t), 10, &mut out);
        }
        assert_eq!(out.requests.len(), 1);
        assert_eq!(out.requests[0].1.commands.len(), 3);
        assert_eq!(s.next_deadline_us(), Some(110));
        s.on_tick(109, &mut out);
        assert_eq!(out.requests.len(), 1, "partial batch must wait for the timeout");
        s.on_tick(110, &mut out);
        assert_eq!(out.requests.len(), 2);
        assert_eq!(out.requests[1].1.commands.iter().map(|c| c.timestamp).collect::<Vec<_>>(), vec![4]);
        assert_eq!(s.next_deadline_us(), None);
    }

    #[test]
    fn zero_timeout_sends_at_every_tick() {
        let mut s = source(64, 0);
        let mut out = Outbox::default();
        s.on_command(command(1), 5, &mut out);
        s.on_command(command(2), 5, &mut out);
        assert!(out.requests.is_empty());
        s.on_tick(5, &mut out);
        assert_eq!(out.requests.len(), 1);
        assert_eq!(out.requests[0].1.commands.len(), 2);
    }

    /// Section III-E: unanswered requests go to the new view's proposer; answered ones do not.
    #[test]
    fn a_new_view_gets_the_unanswered_requests() {
        let mut s = source(1, 0);
        let mut out = Outbox::default();
        for t in 1..=3 {
            s.on_command(command(t), 0, &mut out);
        }
        s.on_reply(&reply(2));
        s.on_reply(&reply(2));
        out.requests.clear();
        s.on_view(View { controller: 0, view: 1 }, 10, &mut out);
        s.on_view(View { controller: 2, view: 1 }, 10, &mut out);
        let resent: Vec<(u32, u64)> = out.requests.iter().map(|(v, r)| (leader_of(*v, 2), r.number)).collect();
        assert_eq!(resent, vec![(1, 1), (1, 3)], "to proposer 1, the two unanswered requests");
    }

    /// A request is done once every command in it has a reply, however many executors answer
    /// each; a reply that does not name the command at its place (from an earlier incarnation's
    /// request of the same number, say) answers nothing.
    #[test]
    fn a_request_is_done_when_each_command_has_a_reply() {
        let mut s = source(3, 0);
        let mut out = Outbox::default();
        for t in 1..=3 {
            s.on_command(command(t), 0, &mut out);
        }
        let at = |index: u32, timestamp: u64| Reply { request: 1, index, ..reply(timestamp) };
        s.on_reply(&at(0, 2));
        s.on_reply(&Reply { client: 9, ..at(1, 2) });
        assert_eq!(s.held(), 1, "neither names the command at its place");
        for executor in 0..3 {
            s.on_reply(&Reply { executor, ..at(0, 1) });
            s.on_reply(&Reply { executor, ..at(1, 2) });
        }
        assert_eq!(s.held(), 1, "the third command is unanswered");
        s.on_reply(&at(2, 3));
        assert_eq!(s.held(), 0);
    }

    /// Unanswered requests are resent after half a view timeout, and only then.
    #[test]
    fn resends_after_half_a_view_timeout() {
        let mut s = source(1, 0);
        let mut out = Outbox::default();
        s.on_command(command(1), 0, &mut out);
        s.on_tick(499, &mut out);
        assert_eq!(out.requests.len(), 1);
        s.on_tick(500, &mut out);
        assert_eq!(out.requests.len(), 2);
        s.on_reply(&reply(1));
        s.on_tick(2_000, &mut out);
        assert_eq!(out.requests.len(), 2, "answered: never again");
        assert_eq!(s.held(), 0);
    }

    /// Section III-E: TARGET reports the highest request number; a new incarnation numbers
    /// above every earlier one.
    #[test]
    fn reports_targets_and_never_reuses_numbers() {
        let mut s = source(1, 0);
        let mut out = Outbox::default();
        s.on_tick(250, &mut out);
        assert_eq!(out.targets, vec![Target { source: 1, number: 0 }]);
        s.on_command(command(1), 250, &mut out);
        s.on_tick(500, &mut out);
        assert_eq!(out.targets.last(), Some(&Target { source: 1, number: 1 }));
        let mut restarted = source(1, 0).incarnation(1);
        restarted.on_command(command(2), 0, &mut out);
        assert!(out.requests.last().unwrap().1.number > 1 << INCARNATION_SHIFT);
    }
}
