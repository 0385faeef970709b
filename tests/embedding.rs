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
            .map(|t: u64| {
                let op = CoordOp::Create { path: format!("/n{t}"), data: vec![], sequential: false }.encode();
                // One client per request source: a client's first command opens its session,
                // and its later ones must not overtake it through another source.
                let source = (t % 2) as u32;
                Submit { source, command: Command::new(source as u64 + 1, t.div_ceil(2), op) }
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

// ---- The embedding API (`tara::embed`) ----

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use tara::app::kv::{KvOp, KvStore};
use tara::dataflow::IngressError;
use tara::dataflow::Stage;
use tara::embed::{Rejected, embed, step_until_stopped};
use timely::dataflow::operators::{Inspect, Probe};

/// How the user's submissions input advances its time.
#[derive(Clone, Copy)]
enum Pattern {
    /// Left at time 0, only flushed.
    AtZero,
    /// Advanced once, to 1.
    AdvanceOnce,
    /// Advanced to the wall-clock milliseconds before every batch.
    WallClock,
}

/// Command `i` of a workload: a put by client `source + 1` through request source `source`.
fn put(i: u64) -> Submit {
    let source = (i % 2) as u32;
    let op = KvOp::Put { key: format!("k{}", i % 97), value: i.to_le_bytes().to_vec() }.encode();
    Submit { source, command: Command::new(source as u64 + 1, i / 2 + 1, op) }
}

/// What an embedded run delivered at worker 0.
struct Delivered {
    executed: Vec<(u64, Executed)>,
    /// The differential view: how many keys exist per first letter, as `((letter, count), time, diff)`.
    view: Vec<((char, isize), u64, isize)>,
    rejected: Vec<Rejected>,
    /// The exactly-once stream's frontier passed the time of the last command delivered.
    frontier_passed: bool,
}

/// Runs TARA embedded in a 3-worker job; worker 0 submits `submissions` (in batches of 100,
/// at most 500 ahead of what was delivered) as `pattern` says, waits until `expected` commands
/// were delivered exactly once and the frontier passed them, and stops the job. `faults` runs
/// on another thread with the count of commands delivered so far.
fn run_embedded(
    submissions: Vec<Submit>,
    expected: usize,
    pattern: Pattern,
    faults: impl FnOnce(&tara::dataflow::Control, &AtomicUsize) + Send + 'static,
) -> Delivered {
    let params = Params::default();
    let placement = Placement::spread(&params, 1, 3).unwrap();
    let state = tempfile::tempdir().unwrap();
    let deployment = Deployment::new(params, placement).state_dir(state.path().into());
    let control = deployment.control.clone();
    let delivered = Arc::new(AtomicUsize::new(0));
    let (executed_tx, executed_rx) = crossbeam_channel::unbounded::<(u64, Executed)>();
    let (rejected_tx, rejected_rx) = crossbeam_channel::unbounded::<Rejected>();
    let (view_tx, view_rx) = crossbeam_channel::unbounded();
    let passed = Arc::new(AtomicBool::new(false));
    let submissions = Arc::new(submissions);
    let (count, passed_flag) = (delivered.clone(), passed.clone());
    let guards = timely::execute(timely::Config::process(3), move |worker| {
        let (executed_tx, rejected_tx, count) = (executed_tx.clone(), rejected_tx.clone(), count.clone());
        let view_tx = view_tx.clone();
        let last_time = Arc::new(AtomicUsize::new(0));
        let (seen, counter) = (last_time.clone(), count.clone());
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, commands) = scope.new_input::<Vec<Submit>>();
            let tara = embed(scope, commands, &deployment, |_| KvStore::default()).unwrap();
            let (probe, executed) = tara.executed.probe();
            // The view, probed with the same handle: the run ends once it passed the last time too.
            executed
                .clone()
                .as_state_updates(KvUpdates::default())
                .map(|(key, _value)| first_letter(&key))
                .count()
                .inspect(move |update| {
                    let _ = view_tx.send(*update);
                })
                .probe_with(&probe);
            executed.inspect_core(move |event| {
                let Ok((stamp, data)) = event else { return };
                let time = *stamp.least().expect("a message has a time");
                seen.fetch_max(time as usize, Ordering::SeqCst);
                for e in data {
                    counter.fetch_add(1, Ordering::SeqCst);
                    drop(executed_tx.send((time, e.clone())));
                }
            });
            tara.rejected.inspect(move |r| drop(rejected_tx.send(r.clone())));
            (input, probe)
        });
        if worker.index() == 0 {
            let start = Instant::now();
            let mut sent = 0;
            for (i, batch) in submissions.chunks(100).enumerate() {
                while sent > count.load(Ordering::SeqCst) + 500 {
                    worker.step_or_park(Some(std::time::Duration::from_millis(1)));
                }
                match pattern {
                    Pattern::AtZero => {}
                    Pattern::AdvanceOnce if i == 0 => input.advance_to(1),
                    Pattern::AdvanceOnce => {}
                    Pattern::WallClock => input.advance_to(1 + start.elapsed().as_millis() as u64),
                }
                batch.iter().cloned().for_each(|s| input.send(s));
                input.flush();
                sent += batch.len();
            }
            let done = || {
                count.load(Ordering::SeqCst) >= expected
                    && !probe.less_equal(&(last_time.load(Ordering::SeqCst) as u64))
            };
            while !done() {
                worker.step_or_park(Some(std::time::Duration::from_millis(1)));
            }
            passed_flag.store(true, Ordering::SeqCst);
            deployment.control.stop();
        }
        step_until_stopped(worker, &deployment.control, input);
    })
    .unwrap();
    faults(&control, &delivered);
    drop(guards.join());
    let executed = executed_rx.try_iter().collect();
    Delivered {
        executed,
        view: view_rx.try_iter().collect(),
        rejected: rejected_rx.try_iter().collect(),
        frontier_passed: passed.load(Ordering::SeqCst),
    }
}

/// Checks that `delivered` holds positions 0, 1, 2, .. once each, in order, with times that
/// never decrease, and every command of `submissions` once.
fn assert_exactly_once(delivered: &[(u64, Executed)], submissions: &[Submit]) {
    let positions: Vec<u64> = delivered.iter().map(|(_, e)| e.position).collect();
    assert_eq!(positions, (0..submissions.len() as u64).collect::<Vec<_>>(), "each position once, in order");
    assert!(delivered.windows(2).all(|w| w[0].0 <= w[1].0), "times never decrease along the log");
    let mut commands: Vec<(u64, u64)> =
        delivered.iter().map(|(_, e)| (e.command.client, e.command.timestamp)).collect();
    let mut wanted: Vec<(u64, u64)> = submissions.iter().map(|s| (s.command.client, s.command.timestamp)).collect();
    commands.sort();
    wanted.sort();
    assert_eq!(commands, wanted, "every submitted command once");
}

fn check_pattern(pattern: Pattern) {
    within(60, move || {
        let submissions: Vec<Submit> = (0..300).map(put).collect();
        let run = run_embedded(submissions.clone(), 300, pattern, |_, _| {});
        assert!(run.frontier_passed);
        assert_exactly_once(&run.executed, &submissions);
    });
}

/// The user's input left at time 0 (only flushed) neither hangs TARA nor holds its frontier.
#[test]
fn an_input_left_at_time_zero_does_not_hang_the_dataflow() {
    check_pattern(Pattern::AtZero);
}

/// One `advance_to(1)` does not pin the executed stream's frontier at 1.
#[test]
fn an_input_advanced_once_does_not_hold_the_frontier() {
    check_pattern(Pattern::AdvanceOnce);
}

/// An input advanced by the wall clock works as well.
#[test]
fn an_input_advanced_by_the_wall_clock_works() {
    check_pattern(Pattern::WallClock);
}

/// `Control::stop` and `step_until_stopped` end every worker while the user's input is open.
#[test]
fn stop_ends_the_workers_while_the_input_is_open() {
    within(60, || {
        let params = Params::default();
        let deployment =
            Deployment::new(params.clone(), Placement::spread(&params, 1, 3).unwrap()).durable_records(false);
        let control = deployment.control.clone();
        let steps = Arc::new(AtomicUsize::new(0));
        let counted = steps.clone();
        let guards = timely::execute(timely::Config::process(3), move |worker| {
            let input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, commands) = scope.new_input::<Vec<Submit>>();
                embed(scope, commands, &deployment, |_| KvStore::default()).unwrap();
                input
            });
            counted.fetch_add(1, Ordering::SeqCst);
            step_until_stopped(worker, &deployment.control, input);
        })
        .unwrap();
        while steps.load(Ordering::SeqCst) < 3 {
            std::thread::yield_now();
        }
        control.stop();
        let results = guards.join();
        assert_eq!(results.len(), 3);
        assert!(results.iter().all(|r| r.is_ok()), "every worker returned");
    });
}

/// A submission for a request source that does not exist is rejected where it enters, with
/// the reason; the others execute.
#[test]
fn a_submission_to_a_nonexistent_source_is_rejected() {
    within(60, || {
        let mut submissions: Vec<Submit> = (0..10).map(put).collect();
        let wrong = Submit { source: 99, command: Command::new(9, 1, KvOp::Get { key: "k".into() }.encode()) };
        submissions.insert(5, wrong.clone());
        let run = run_embedded(submissions.clone(), 10, Pattern::AtZero, |_, _| {});
        assert_eq!(run.rejected, vec![Rejected { submit: wrong.clone(), error: IngressError::NoSuchSource(99) }]);
        assert_eq!(run.rejected[0].error.to_string(), "request source 99 does not exist");
        submissions.retain(|s| s != &wrong);
        assert_exactly_once(&run.executed, &submissions);
    });
}

/// Every command is delivered exactly once, with no gap, across a crash and a restart of each
/// executor replica in turn (the stream reads from all of them and fails over).
#[test]
fn exactly_once_across_crashes_and_restarts_of_executor_replicas() {
    within(120, || {
        let submissions: Vec<Submit> = (0..3000).map(put).collect();
        let faults = |control: &tara::dataflow::Control, delivered: &AtomicUsize| {
            let wait_for = |n: usize| {
                while delivered.load(Ordering::SeqCst) < n {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            };
            for (executor, at) in [(0, 300), (1, 1300), (2, 2300)] {
                wait_for(at);
                control.crash(Stage::Executor, executor).unwrap();
                // The crash took effect (the replica stopped) before the next commands arrive,
                // so they are delivered from the other replicas.
                while !control.stats(Stage::Executor, executor).unwrap().is_halted() {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                wait_for((delivered.load(Ordering::SeqCst) + 300).min(3000));
                control.restart(Stage::Executor, executor).unwrap();
            }
        };
        let run = run_embedded(submissions.clone(), 3000, Pattern::WallClock, faults);
        assert_exactly_once(&run.executed, &submissions);
    });
}

use tara::embed::{AsStateUpdates, KvUpdates};

fn first_letter(key: &str) -> char {
    key.chars().next().unwrap_or(' ')
}

/// A random workload of puts and deletes over 200 keys ("a0" .. "j19").
fn random_workload(seed: u64, n: u64) -> Vec<Submit> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        state >> 33
    };
    (0..n)
        .map(|i| {
            let key = format!("{}{}", (b'a' + (next() % 10) as u8) as char, next() % 20);
            let op = match next() % 4 {
                0 => KvOp::Delete { key },
                _ => KvOp::Put { key, value: i.to_le_bytes().to_vec() },
            };
            let source = (i % 2) as u32;
            Submit { source, command: Command::new(source as u64 + 1, i / 2 + 1, op.encode()) }
        })
        .collect()
}

/// The view recomputed from scratch over the commands delivered at times up to `time`.
fn recompute(executed: &[(u64, Executed)], time: u64) -> std::collections::BTreeMap<char, isize> {
    let mut store = std::collections::BTreeMap::new();
    for (_, e) in executed.iter().filter(|(t, _)| *t <= time) {
        match bincode::deserialize::<KvOp>(&e.command.op).unwrap() {
            KvOp::Put { key, value } => drop(store.insert(key, value)),
            KvOp::Delete { key } => drop(store.remove(&key)),
            KvOp::Get { .. } => {}
        }
    }
    let mut counts = std::collections::BTreeMap::new();
    store.keys().for_each(|k| *counts.entry(first_letter(k)).or_insert(0) += 1);
    counts
}

/// The differential view at every time the log reached equals a from-scratch recomputation
/// over the commands executed by then, which are a prefix of the log (randomized workloads of
/// 10,000 commands, several seeds).
#[test]
fn the_differential_view_equals_a_recomputation_at_every_frontier() {
    for seed in [1, 2, 3] {
        within(120, move || {
            let submissions = random_workload(seed, 10_000);
            let run = run_embedded(submissions.clone(), 10_000, Pattern::WallClock, |_, _| {});
            assert_exactly_once(&run.executed, &submissions);
            let mut times: Vec<u64> = run.executed.iter().map(|(t, _)| *t).collect();
            times.dedup();
            assert!(times.len() > 1, "seed {seed}: the log spans several frontiers");
            for time in times {
                let mut view = std::collections::BTreeMap::new();
                for ((letter, count), _, diff) in run.view.iter().filter(|(_, t, _)| *t <= time) {
                    *view.entry((*letter, *count)).or_insert(0) += diff;
                }
                let view: std::collections::BTreeMap<char, isize> = view
                    .into_iter()
                    .filter(|(_, d)| *d != 0)
                    .map(|((l, c), d)| {
                        assert_eq!(d, 1, "seed {seed}, time {time}: one count per letter");
                        (l, c)
                    })
                    .collect();
                assert_eq!(view, recompute(&run.executed, time), "seed {seed}, time {time}");
            }
        });
    }
}

// ---- Jobs of several processes ----

use std::cell::RefCell;
use std::rc::Rc;

use tara::embed::stop_on;
use timely::dataflow::operators::Exchange as _;
use timely::dataflow::operators::vec::Filter;

/// What building TARA says in a job of `workers` workers when its placement spreads over
/// `processes` processes of `threads` workers: each worker's error, through `embed` or through
/// `tara` itself.
fn refusals(processes: usize, threads: usize, workers: usize, through_embed: bool) -> Vec<String> {
    let params = Params::default();
    let placement = Placement::spread(&params, processes, threads).unwrap();
    let deployment = Deployment::new(params, placement).durable_records(false);
    let errors = timely::execute(timely::Config::process(workers), move |worker| {
        worker.dataflow::<u64, _, _>(|scope| {
            let (_input, commands) = scope.new_input::<Vec<Submit>>();
            let app = |_| KvStore::default();
            match through_embed {
                true => embed(scope, commands, &deployment, app).err(),
                false => tara(scope, commands, &deployment, app).err(),
            }
        })
    })
    .unwrap()
    .join();
    errors.into_iter().map(|error| error.unwrap().expect("building TARA fails")).collect()
}

/// A deployment whose placement is for another number of workers than the job has would put
/// replicas on workers that do not exist (their tuples would go to other workers, which host
/// no such replica, and nothing would ever execute): `embed` refuses it, naming both shapes.
#[test]
fn a_placement_for_another_number_of_workers_is_rejected() {
    within(60, || {
        for error in refusals(2, 2, 3, true) {
            assert!(error.contains("4 workers (2 processes of 2)") && error.contains("has 3"), "{error}");
        }
    });
}

/// `tara` itself, without `embed`, refuses a placement that puts replicas on workers the job
/// does not have (its tuples would go to workers that host no such replica).
#[test]
fn tara_refuses_replicas_on_workers_the_job_does_not_have() {
    within(60, || {
        for error in refusals(1, 3, 2, false) {
            assert!(error.contains("worker 2") && error.contains("has 2 workers"), "{error}");
        }
    });
}

/// Free 127.0.0.1 addresses for `n` timely processes (bound to port 0, then released).
fn free_addresses(n: usize) -> Vec<String> {
    let listeners: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect()
}

/// Two timely processes (two clusters of 2 workers in this test process, as separate
/// processes would be), each with its own deployment and so its own `Control`: the replicas
/// are spread over both, workers of both submit, each worker learns through the dataflow that
/// its commands executed exactly once, and `stop_on` stops both processes when the log holds
/// every command.
#[test]
fn two_processes_with_their_own_controls_deliver_once_and_stop_together() {
    // Below the client window: each worker is one client that never waits for a reply.
    const PER_WORKER: u64 = 50;
    within(120, || {
        let addresses = free_addresses(2);
        let processes: Vec<_> = (0..2)
            .map(|process| {
                let addresses = addresses.clone();
                std::thread::spawn(move || run_process(process, addresses, PER_WORKER))
            })
            .collect();
        for (process, handle) in processes.into_iter().enumerate() {
            for (worker, seen) in handle.join().expect("a process").into_iter().enumerate() {
                assert_eq!(seen, vec![1; PER_WORKER as usize], "process {process}, worker {worker}: each command once");
            }
        }
    });
}

/// One process of the job: returns, per worker, how often each of its commands was executed.
fn run_process(process: usize, addresses: Vec<String>, per_worker: u64) -> Vec<Vec<u64>> {
    let params = Params::default();
    let deployment = Deployment::new(params.clone(), Placement::spread(&params, 2, 2).unwrap()).durable_records(false);
    let control = deployment.control.clone();
    let communication =
        timely::CommunicationConfig::Cluster { threads: 2, process, addresses, report: false, zerocopy: false };
    let config = timely::Config { communication, worker: timely::WorkerConfig::default() };
    let total = 4 * per_worker;
    let guards = timely::execute(config, move |worker| {
        let me = worker.index() as u64;
        let seen = Rc::new(RefCell::new(vec![0u64; per_worker as usize]));
        let counts = seen.clone();
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, commands) = scope.new_input::<Vec<Submit>>();
            let tara = embed(scope, commands, &deployment, |_| KvStore::default()).unwrap();
            stop_on(tara.executed.clone().filter(move |e| e.position + 1 == total), &control);
            let back = tara.executed.exchange(|e| e.command.client - 1);
            back.inspect(move |e| counts.borrow_mut()[e.command.timestamp as usize - 1] += 1);
            input
        });
        for t in 1..=per_worker {
            let op = KvOp::Put { key: format!("w{me}/{t}"), value: vec![] }.encode();
            input.send(Submit { source: (t % 2) as u32, command: Command::new(me + 1, t, op) });
        }
        input.flush();
        step_until_stopped(worker, &control, input);
        seen.take()
    })
    .unwrap();
    guards.join().into_iter().map(|r| r.expect("a worker")).collect()
}
