//! The baseline: bare timely with TARA's message pattern and nothing else (`papers/timely.md`).
//!
//! client -> proposer -> 3 committers -> 3 executors that apply once 2 of 3 commits arrived ->
//! reply to the client through a feedback loop. No garbage collection, no duplicate detection,
//! no views, no ordered execution. It uses the same epoch capabilities as tara (`Pulse`), so the
//! difference between the two is what the protocol adds.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::{ConnectLoop, Feedback};
use timely::dataflow::{Scope, Stream};

use super::closed_loop::{Driver, Measurement, Stats, measure};
use tara::dataflow::pulse::{Pulse, give};
use tara::dataflow::{Control, Placement};
use tara::protocol::Params;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Req {
    worker: u32,
    client: u32,
    timestamp: u64,
    payload: Vec<u8>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Msg {
    to: u32,
    from: u32,
    sequence: u64,
    batch: Arc<Vec<Req>>,
}

const WORKERS: usize = 3;

/// Runs the baseline with `clients` closed-loop clients and batches of up to `batch` requests.
pub fn run(clients: usize, batch: usize, warmup: Duration, seconds: Duration) -> Measurement {
    let params = Params::default();
    let placement = Placement::spread(&params, 1, WORKERS).expect("3 workers");
    let control = Control::new(&placement);
    let stats = Stats::new();
    let (control2, stats2) = (control.clone(), stats.clone());
    let guards = timely::execute(timely::Config::process(WORKERS), move |worker| {
        let (control, stats) = (control2.clone(), stats2.clone());
        super::closed_loop::profile::install(worker, &stats);
        worker.dataflow::<u64, _, _>(|scope| {
            let (handle, replies) = scope.feedback::<Vec<Msg>>(1);
            let requests = client_op(replies, clients, &control, &stats);
            let proposals = proposer(requests, batch, &control);
            let commits = relay(proposals, "Committer", &control);
            executor(commits, &control).connect_loop(handle);
        });
        while worker.step_or_park(None) {}
    })
    .expect("timely starts");
    measure(&stats, warmup, seconds, move || {
        control.stop();
        drop(guards.join());
    })
}

fn pulse(
    scope: Scope<'_, u64>,
    address: std::rc::Rc<[usize]>,
    caps: Vec<timely::dataflow::operators::Capability<u64>>,
    control: &Arc<Control>,
) -> Pulse {
    Pulse::new(caps, scope.activator_for(address), control.clone(), 5, true)
}

/// Clients on every worker; client i lives on worker i mod 3.
fn client_op<'s>(
    replies: Stream<'s, u64, Vec<Msg>>,
    clients: usize,
    control: &Arc<Control>,
    stats: &Arc<Stats>,
) -> Stream<'s, u64, Vec<Req>> {
    let scope = replies.scope();
    let me = scope.index();
    let mut builder = OperatorBuilder::new("Clients".to_owned(), scope);
    let info = builder.operator_info();
    let mut input = builder.new_input(replies, Exchange::new(|m: &Msg| m.to as u64));
    let (output, requests) = builder.new_output();
    let mut output = OutputBuilder::from(output);
    let ids = (0..clients as u64).filter(move |c| *c as usize % WORKERS == me);
    let mut driver = Driver::new(ids, stats.clone());
    let control = control.clone();
    builder.build(move |caps| {
        let mut pulse = pulse(scope, info.address.clone(), caps, &control);
        let mut started = false;
        let mut ready: Vec<usize> = Vec::new();
        move |_| {
            let alive = pulse.begin();
            input.for_each(|_, data| {
                for msg in data.drain(..) {
                    for req in msg.batch.iter() {
                        let index = req.client as usize / WORKERS;
                        if driver.complete(index, req.timestamp) {
                            ready.push(index);
                        }
                    }
                }
            });
            if !alive {
                return;
            }
            if !started {
                started = true;
                ready.extend(0..driver.clients.len());
            }
            let mut out = Vec::new();
            for index in ready.drain(..) {
                let timestamp = driver.next(index);
                let client = driver.clients[index].id as u32;
                out.push(Req { worker: me as u32, client, timestamp, payload: vec![7; 64] });
            }
            let sent = give(&mut output, pulse.send_cap(0), out.into_iter());
            driver.flush();
            if pulse.stopping() {
                pulse.release();
            }
            pulse.end(None, sent);
        }
    });
    requests
}

/// The proposer on worker 0: numbers batches and sends each to the 3 committers.
fn proposer<'s>(
    requests: Stream<'s, u64, Vec<Req>>,
    batch: usize,
    control: &Arc<Control>,
) -> Stream<'s, u64, Vec<Msg>> {
    let scope = requests.scope();
    let mut builder = OperatorBuilder::new("Proposer".to_owned(), scope);
    let info = builder.operator_info();
    let mut input = builder.new_input(requests, Exchange::new(|_: &Req| 0));
    let (output, proposals) = builder.new_output();
    let mut output = OutputBuilder::from(output);
    let control = control.clone();
    let hosting = scope.index() == 0;
    builder.build(move |caps| {
        let mut pulse = Pulse::new(caps, scope.activator_for(info.address.clone()), control, 5, hosting);
        let mut sequence = 0;
        let mut pending: Vec<Req> = Vec::new();
        move |_| {
            let alive = pulse.begin();
            input.for_each(|_, data| pending.append(data));
            if !alive {
                pending.clear();
                return;
            }
            let mut out = Vec::new();
            while !pending.is_empty() {
                let take = pending.len().min(batch);
                let chunk: Arc<Vec<Req>> = Arc::new(pending.drain(..take).collect());
                for to in 0..WORKERS as u32 {
                    out.push(Msg { to, from: 0, sequence, batch: chunk.clone() });
                }
                sequence += 1;
            }
            let sent = give(&mut output, pulse.send_cap(0), out.into_iter());
            if pulse.stopping() {
                pulse.release();
            }
            pulse.end(None, sent);
        }
    });
    proposals
}

/// A committer on every worker: forwards each proposal to the 3 executors.
fn relay<'s>(proposals: Stream<'s, u64, Vec<Msg>>, name: &str, control: &Arc<Control>) -> Stream<'s, u64, Vec<Msg>> {
    let scope = proposals.scope();
    let me = scope.index() as u32;
    let mut builder = OperatorBuilder::new(name.to_owned(), scope);
    let info = builder.operator_info();
    let mut input = builder.new_input(proposals, Exchange::new(|m: &Msg| m.to as u64));
    let (output, commits) = builder.new_output();
    let mut output = OutputBuilder::from(output);
    let control = control.clone();
    builder.build(move |caps| {
        let mut pulse = pulse(scope, info.address.clone(), caps, &control);
        let mut out = Vec::new();
        move |_| {
            let alive = pulse.begin();
            input.for_each(|_, data| {
                for msg in data.drain(..).filter(|_| alive) {
                    for to in 0..WORKERS as u32 {
                        out.push(Msg { to, from: me, sequence: msg.sequence, batch: msg.batch.clone() });
                    }
                }
            });
            let sent = give(&mut output, pulse.send_cap(0), out.drain(..));
            if pulse.stopping() {
                pulse.release();
            }
            pulse.end(None, sent);
        }
    });
    commits
}

/// An executor on every worker: applies a batch once 2 of 3 commits arrived, replies to clients.
fn executor<'s>(commits: Stream<'s, u64, Vec<Msg>>, control: &Arc<Control>) -> Stream<'s, u64, Vec<Msg>> {
    let scope = commits.scope();
    let me = scope.index() as u32;
    let mut builder = OperatorBuilder::new("Executor".to_owned(), scope);
    let info = builder.operator_info();
    let mut input = builder.new_input(commits, Exchange::new(|m: &Msg| m.to as u64));
    let (output, replies) = builder.new_output();
    let mut output = OutputBuilder::from(output);
    let control = control.clone();
    builder.build(move |caps| {
        let mut pulse = pulse(scope, info.address.clone(), caps, &control);
        // Votes per sequence number, in a ring indexed from `base` (no growing map).
        let mut base = 0u64;
        let mut votes: std::collections::VecDeque<u8> = std::collections::VecDeque::new();
        let mut applied = 0u64;
        let mut out = Vec::new();
        move |_| {
            let alive = pulse.begin();
            input.for_each(|_, data| {
                for msg in data.drain(..).filter(|_| alive) {
                    if msg.sequence < base {
                        continue;
                    }
                    let index = (msg.sequence - base) as usize;
                    if votes.len() <= index {
                        votes.resize(index + 1, 0);
                    }
                    votes[index] += 1;
                    if votes[index] == 2 {
                        applied += msg.batch.len() as u64;
                        for worker in 0..WORKERS as u32 {
                            let mine: Vec<Req> = msg.batch.iter().filter(|r| r.worker == worker).cloned().collect();
                            if !mine.is_empty() {
                                out.push(Msg { to: worker, from: me, sequence: msg.sequence, batch: Arc::new(mine) });
                            }
                        }
                    }
                    while votes.front().is_some_and(|v| *v == 3) {
                        votes.pop_front();
                        base += 1;
                    }
                }
            });
            let sent = give(&mut output, pulse.send_cap(0), out.drain(..));
            if pulse.stopping() {
                std::hint::black_box(applied);
                pulse.release();
            }
            pulse.end(None, sent);
        }
    });
    replies
}
