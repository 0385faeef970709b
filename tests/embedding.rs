//! TARA embedded in a user's own timely computation: one call to `tara` on the user's scope.

mod common;

use std::sync::Arc;

use common::within;
use crossbeam_channel::Sender;
use tara::app::coordination::{CoordOp, CoordResponse, Coordination, decode_result};
use tara::dataflow::{Deployment, Placement, Submit, tara};
use tara::protocol::{Command, Executed, Outcome, Params, Reply};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Input;
use timely::dataflow::operators::generic::Operator;

/// Runs a 3-worker timely computation with the TARA dataflow, submits `submissions` on worker 0,
/// and returns every reply and executed command once `replies_expected` replies arrived.
fn run(submissions: Vec<Submit>, replies_expected: usize) -> (Vec<Reply>, Vec<Executed>) {
    let params = Params::default();
    let placement = Placement::spread(&params, 1, 3).unwrap();
    let deployment = Deployment::new(params, placement).emit_executed(true).durable_records(false);
    let control = deployment.control.clone();
    let (reply_tx, reply_rx) = crossbeam_channel::unbounded::<Reply>();
    let (executed_tx, executed_rx) = crossbeam_channel::unbounded::<Executed>();
    let submissions = Arc::new(submissions);
    let guards = timely::execute(timely::Config::process(3), move |worker| {
        let (reply_tx, executed_tx) = (reply_tx.clone(), executed_tx.clone());
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, commands) = scope.new_input::<Vec<Submit>>();
            let streams = tara(scope, commands, &deployment, |_| Coordination::default()).unwrap();
            forward(streams.replies, reply_tx);
            forward(streams.executed, executed_tx);
            input
        });
        if worker.index() == 0 {
            submissions.iter().cloned().for_each(|s| input.send(s));
        }
        drop(input);
        while worker.step_or_park(None) {}
    })
    .unwrap();
    let replies: Vec<Reply> = reply_rx.iter().take(replies_expected).collect();
    control.stop();
    drop(guards.join());
    (replies, executed_rx.try_iter().collect())
}

/// A sink that sends every item to a channel.
fn forward<T: 'static>(stream: timely::dataflow::Stream<'_, u64, Vec<T>>, sender: Sender<T>) {
    stream.sink(Pipeline, "Forward", move |(input, _)| {
        input.for_each(|_, data| data.drain(..).for_each(|x| drop(sender.send(x))));
    });
}

/// Section III-C: a retransmitted duplicate (same client and timestamp, through
/// another request source) takes effect once and is answered from the reply cache.
#[test]
fn a_retransmitted_duplicate_takes_effect_once() {
    within(60, || {
        let create = CoordOp::Create { path: "/lock-".into(), data: vec![], sequential: true }.encode();
        let command = Command::new(7, 1, create);
        let submissions = vec![Submit { source: 0, command: command.clone() }, Submit { source: 1, command }];
        let (replies, executed) = run(submissions, 6);

        assert_eq!(executed.len(), 3, "each of the 3 executors executed the command exactly once");
        let names: Vec<_> = replies.iter().map(|r| decode_result(&r.result).unwrap()).collect();
        assert!(
            names.iter().all(|n| n == &Ok(CoordResponse::Created { path: "/lock-0000000000".into() })),
            "{names:?}"
        );
        for executor in 0..3 {
            let mut outcomes: Vec<Outcome> =
                replies.iter().filter(|r| r.executor == executor).map(|r| r.outcome).collect();
            outcomes.sort();
            assert_eq!(outcomes, vec![Outcome::Executed, Outcome::Cached], "executor {executor}");
        }
    });
}

/// The executed stream carries `(sequence number, command, result)` in sequence order per
/// executor replica, the same at every replica.
#[test]
fn the_executed_stream_is_the_same_at_every_replica() {
    within(60, || {
        let submissions: Vec<Submit> = (1..=20)
            .map(|t| {
                let op = CoordOp::Create { path: format!("/n{t}"), data: vec![], sequential: false }.encode();
                Submit { source: (t % 2) as u32, command: Command::new(1, t, op) }
            })
            .collect();
        let (_, executed) = run(submissions, 60);
        let order = |e: u32| -> Vec<(u64, u32, u64)> {
            executed.iter().filter(|x| x.executor == e).map(|x| (x.sequence, x.index, x.command.timestamp)).collect()
        };
        assert_eq!(order(0).len(), 20);
        assert_eq!(order(0), order(1));
        assert_eq!(order(0), order(2));
        let mut sorted = order(0);
        sorted.sort();
        assert_eq!(order(0), sorted, "emitted in sequence order");
    });
}
