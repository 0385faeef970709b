//! Exactly once: every executed command delivered once, in log order, at one worker.
//!
//! The rule: every executor replica reports what it executes, with the command's position in
//! the executed log (the same at every replica, restored with checkpoints). All reports go to
//! one worker, which delivers position `p` the first time any replica reports it, and only
//! after `p - 1`. So the stream fails over without a gap or a duplicate: a crashed replica
//! simply stops reporting while the others go on; a restarted one replays from its checkpoint
//! and its replays are dropped; one that catches up by state transfer skips positions that
//! the replica it copied from already reported. Delivery stops only while no executor replica
//! executes. Times never decrease along the log, so a frontier shows a prefix of it.

use std::collections::BTreeMap;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::protocol::Executed;

/// The most reports held ahead of the next position to deliver. Reports only wait while the
/// report of an earlier position is in flight from another replica, so a few epochs' worth is
/// plenty; a report beyond the bound is dropped with an error (another replica reports the
/// same position later, unless every replica skipped it, which the protocol rules out).
pub const REORDER_BOUND: usize = 1 << 20;

/// Delivers each executed command of `executed` (every replica's reports) exactly once, in log
/// order, at worker `worker` of the scope.
pub fn exactly_once<'s>(executed: Stream<'s, u64, Vec<Executed>>, worker: usize) -> Stream<'s, u64, Vec<Executed>> {
    let mut delivery = Delivery::default();
    let pact = Exchange::new(move |_: &Executed| worker as u64);
    executed.unary::<CapacityContainerBuilder<Vec<Executed>>, _, _, _>(pact, "ExactlyOnce", move |_, _| {
        move |input, output| {
            input.for_each(|cap, data| {
                let ready = delivery.offer(data.drain(..));
                if ready.is_empty() {
                    return;
                }
                // Never earlier than what went out before: a frontier shows a prefix of the log.
                let time = delivery.last_time.max(*cap.least().expect("a message has a time"));
                delivery.last_time = time;
                output.session(&cap.delayed(&time, 0)).give_iterator(ready.into_iter());
            })
        }
    })
}

/// The delivery state: the next position, and the reports that arrived ahead of it.
#[derive(Default)]
pub struct Delivery {
    next: u64,
    ahead: BTreeMap<u64, Executed>,
    last_time: u64,
}

impl Delivery {
    /// Takes reports; returns those now deliverable, in log order.
    pub fn offer(&mut self, reports: impl Iterator<Item = Executed>) -> Vec<Executed> {
        for report in reports.filter(|r| r.position >= self.next) {
            if self.ahead.len() >= REORDER_BOUND && !self.ahead.contains_key(&report.position) {
                tracing::error!(
                    "executed stream: report of position {} dropped, {REORDER_BOUND} waiting",
                    report.position
                );
                continue;
            }
            self.ahead.entry(report.position).or_insert(report);
        }
        let mut ready = Vec::new();
        while let Some(report) = self.ahead.remove(&self.next) {
            ready.push(report);
            self.next += 1;
        }
        ready
    }

    /// The next position to deliver (everything before it was delivered).
    pub fn next(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Command;

    fn report(executor: u32, position: u64) -> Executed {
        let command = Command::new(1, position + 1, vec![]);
        Executed { executor, sequence: position, index: 0, position, command, result: vec![] }
    }

    #[test]
    fn delivers_each_position_once_in_order_whoever_reports_it() {
        let mut d = Delivery::default();
        let got = |v: Vec<Executed>| v.iter().map(|r| r.position).collect::<Vec<_>>();
        assert_eq!(got(d.offer([report(0, 1), report(0, 2)].into_iter())), Vec::<u64>::new(), "0 missing");
        assert_eq!(got(d.offer([report(1, 0), report(1, 1)].into_iter())), vec![0, 1, 2]);
        // A restarted replica replays from its checkpoint: dropped.
        assert_eq!(got(d.offer([report(0, 0), report(0, 1), report(0, 2), report(0, 3)].into_iter())), vec![3]);
        assert_eq!(d.next(), 4);
    }
}
