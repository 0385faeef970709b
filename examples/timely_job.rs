//! TARA inside a user's timely job, in one process or several: every worker is a client that
//! submits puts, and the user's own dataflow consumes the executed stream (each command exactly
//! once, in log order) to count commands per key prefix, printing the counts as its frontier
//! advances. Nothing is shared between workers but the dataflow: each worker learns that its
//! own commands executed from the executed stream, routed back to it.
//!
//! One process: `TARA_EXAMPLE_COMMANDS=3000 cargo run --release --example timely_job -- -w 3`.
//! Two processes (timely's own arguments; `hosts.txt` lists one `host:port` per process):
//! `cargo run --release --example timely_job -- -w 2 -n 2 -p 0 -h hosts.txt`, and `-p 1` in a
//! second terminal. Exits non-zero if a command was counted twice or never.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use tara::app::kv::{KvOp, KvStore};
use tara::dataflow::{Deployment, Submit};
use tara::embed::{JobShape, embed, step_until_stopped, stop_on};
use tara::protocol::{Command, Params};
use tara::timely::dataflow::channels::pact::Exchange;
use tara::timely::dataflow::operators::generic::Operator;
use tara::timely::dataflow::operators::vec::{Filter, Map};
use tara::timely::dataflow::operators::{Exchange as _, Input, Inspect};

/// The key prefixes the workload writes under.
const PREFIXES: [&str; 3] = ["users", "orders", "carts"];

fn main() -> Result<(), String> {
    let commands = bound(3000);
    // The job's shape, from timely's own arguments: every process builds the same placement.
    let config = tara::timely::Config::from_args(std::env::args())?;
    let shape = JobShape::of(&config);
    let params = Params::default();
    // Client `w + 1` (worker w) keeps at most this many commands in flight.
    let window = params.client_window;
    let placement = shape.placement(&params).map_err(|e| e.to_string())?;
    let deployment = Deployment::new(params, placement).durable_records(false);
    let control = deployment.control.clone();
    let outcomes = tara::timely::execute(config, move |worker| {
        let (me, peers) = (worker.index() as u64, worker.peers() as u64);
        let mine: Vec<u64> = (0..commands).filter(|i| i % peers == me).collect();
        // How often each of this worker's commands executed (by timestamp), and the counts of
        // the prefixes this worker owns: what the dataflow told this worker, nothing shared.
        let executed_here = Rc::new(RefCell::new(vec![0u64; mine.len()]));
        let counted = Rc::new(RefCell::new(BTreeMap::<String, u64>::new()));
        let (seen, counts) = (executed_here.clone(), counted.clone());
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, submissions) = scope.new_input::<Vec<Submit>>();
            let tara = embed(scope, submissions, &deployment, |_| KvStore::default()).expect("valid deployment");
            // Every process stops once the log holds every command (delivered in log order).
            stop_on(tara.executed.clone().filter(move |e| e.position + 1 == commands), &control);
            // Each executed command back at the worker that submitted it (client `me + 1`).
            let back = tara.executed.clone().exchange(|e| e.command.client - 1);
            back.inspect(move |e| seen.borrow_mut()[e.command.timestamp as usize - 1] += 1);
            // The user's dataflow: each command's key prefix, counted at the worker owning it.
            let prefixes = tara.executed.flat_map(|e| match bincode::deserialize(&e.command.op) {
                Ok(KvOp::Put { key, .. }) => key.split('/').next().map(str::to_owned),
                _ => None,
            });
            let mut pending: Option<u64> = None; // The latest time counted but not yet printed.
            let by_prefix = Exchange::new(|p: &String| PREFIXES.iter().position(|x| x == p).unwrap_or(0) as u64);
            prefixes.sink(by_prefix, "CountPerPrefix", move |(input, frontier)| {
                let mut counts = counts.borrow_mut();
                input.for_each(|time, data| {
                    for prefix in data.drain(..) {
                        *counts.entry(prefix).or_default() += 1;
                    }
                    pending = pending.max(time.least().copied());
                });
                // Print once the frontier passed what was counted: a prefix of the log, complete.
                let Some(time) = pending.filter(|t| !frontier.frontier().less_equal(t)) else { return };
                pending = None;
                println!("worker {me}, commands up to time {time}: {counts:?}");
            });
            input
        });
        // This worker's share of the commands, as client `me + 1`, at most `window` in flight.
        let mut sent = 0;
        while sent < mine.len() && !control.stopped() {
            let done = executed_here.borrow().iter().filter(|n| **n > 0).count();
            while sent < mine.len() && sent < done + window as usize {
                let i = mine[sent];
                let key = format!("{}/{i}", PREFIXES[i as usize % PREFIXES.len()]);
                let op = KvOp::Put { key, value: i.to_le_bytes().to_vec() }.encode();
                sent += 1;
                input.send(Submit { source: 0, command: Command::new(me + 1, sent as u64, op) });
            }
            input.flush();
            worker.step();
        }
        step_until_stopped(worker, &control, input);
        check(me, peers, commands, &executed_here.borrow(), &counted.borrow())
    })?;
    let mut mine = 0;
    for outcome in outcomes.join() {
        mine += outcome??; // A worker that panicked, or one whose check failed.
    }
    println!(
        "process {} of {}: its {mine} of {commands} commands executed exactly once",
        shape.process, shape.processes
    );
    Ok(())
}

/// Worker `me`'s commands each executed exactly once, and its prefixes counted exactly as
/// many times as they were written; returns how many commands it submitted.
fn check(me: u64, peers: u64, commands: u64, executed: &[u64], counts: &BTreeMap<String, u64>) -> Result<u64, String> {
    let wrong = executed.iter().filter(|n| **n != 1).count();
    let expected: BTreeMap<String, u64> = (0..PREFIXES.len())
        .filter(|p| *p as u64 % peers == me)
        .map(|p| (PREFIXES[p].to_string(), (0..commands).filter(|i| *i as usize % PREFIXES.len() == p).count() as u64))
        .filter(|(_, n)| *n > 0)
        .collect();
    println!("worker {me}: counted {counts:?}, expected {expected:?}; {wrong} own commands not executed once");
    if wrong > 0 || *counts != expected {
        return Err(format!("worker {me}: a command was counted twice or never"));
    }
    Ok(executed.len() as u64)
}

/// The example's work bound: `TARA_EXAMPLE_COMMANDS`, else `default` (the arguments are
/// timely's).
fn bound(default: u64) -> u64 {
    let given = std::env::var("TARA_EXAMPLE_COMMANDS").ok();
    given.map(|s| s.parse().expect("the bound is a number")).unwrap_or(default)
}
