//! TARA inside a user's multi-worker timely job: every worker is a client that submits puts,
//! and the user's own dataflow consumes the executed stream (each command exactly once, in log
//! order) to count commands per key prefix, printing the counts as its frontier advances.
//!
//! `TARA_EXAMPLE_COMMANDS=3000 cargo run --release --example timely_job -- -w 3` (timely's
//! own arguments; one process). Exits non-zero if a command was counted twice or never.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tara::app::kv::{KvOp, KvStore};
use tara::dataflow::{Deployment, Placement, Submit};
use tara::embed::{embed, step_until_stopped};
use tara::protocol::{Command, Params};
use tara::timely::CommunicationConfig;
use tara::timely::dataflow::channels::pact::Exchange;
use tara::timely::dataflow::operators::generic::Operator;
use tara::timely::dataflow::operators::vec::Map;
use tara::timely::dataflow::operators::{Input, Inspect};

/// The key prefixes the workload writes under.
const PREFIXES: [&str; 3] = ["users", "orders", "carts"];

fn main() -> Result<(), String> {
    let commands = bound(3000);
    let workers = match tara::timely::Config::from_args(std::env::args())?.communication {
        CommunicationConfig::Thread => 1,
        CommunicationConfig::Process(n) | CommunicationConfig::ProcessBinary(n) => n,
        CommunicationConfig::Cluster { .. } => return Err("this example runs in one process".into()),
    };
    let params = Params::default();
    // Client `w + 1` (worker w) keeps at most this many commands in flight.
    let window = params.client_window;
    let placement = Placement::spread(&params, 1, workers).map_err(|e| e.to_string())?;
    let deployment = Deployment::new(params, placement).durable_records(false);
    let control = deployment.control.clone();
    // Commands executed per client, and the counts per prefix, each worker's share.
    let done: Arc<Vec<AtomicU64>> = Arc::new((0..workers).map(|_| AtomicU64::new(0)).collect());
    let counts = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let final_counts = counts.clone();
    tara::timely::execute_from_args(std::env::args(), move |worker| {
        let (me, peers) = (worker.index() as u64, worker.peers() as u64);
        let (done, counts, stop) = (done.clone(), counts.clone(), control.clone());
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, submissions) = scope.new_input::<Vec<Submit>>();
            let tara = embed(scope, submissions, &deployment, |_| KvStore::default()).expect("valid deployment");
            let executed_per_client = done.clone();
            let executed = tara.executed.inspect(move |e| {
                executed_per_client[e.command.client as usize - 1].fetch_add(1, Ordering::SeqCst);
            });
            // The user's dataflow: each command's key prefix, counted at the worker owning it.
            let prefixes = executed.flat_map(|e| match bincode::deserialize(&e.command.op) {
                Ok(KvOp::Put { key, .. }) => key.split('/').next().map(str::to_owned),
                _ => None,
            });
            let mut mine = BTreeMap::<String, u64>::new();
            let mut pending: Option<u64> = None; // The latest time counted but not yet printed.
            let by_prefix = Exchange::new(|p: &String| PREFIXES.iter().position(|x| x == p).unwrap_or(0) as u64);
            prefixes.sink(by_prefix, "CountPerPrefix", move |(input, frontier)| {
                input.for_each(|time, data| {
                    for prefix in data.drain(..) {
                        *mine.entry(prefix).or_default() += 1;
                    }
                    pending = pending.max(time.least().copied());
                });
                // Print once the frontier passed what was counted: a prefix of the log, complete.
                let Some(time) = pending.filter(|t| !frontier.frontier().less_equal(t)) else { return };
                pending = None;
                println!("worker {me}, commands up to time {time}: {mine:?}");
                let mut shared = counts.lock().expect("no worker panicked");
                shared.extend(mine.iter().map(|(p, n)| (p.clone(), *n)));
                if shared.values().sum::<u64>() >= commands {
                    stop.stop(); // Every command was counted (more would be a bug, checked below).
                }
            });
            input
        });
        // This worker's share of the commands, as client `me + 1`, at most `window` in flight.
        let mine: Vec<u64> = (0..commands).filter(|i| i % peers == me).collect();
        let mut sent = 0;
        while sent < mine.len() && !control.stopped() {
            while sent < mine.len() && (sent as u64) < done[me as usize].load(Ordering::SeqCst) + window {
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
    })?
    .join()
    .into_iter()
    .collect::<Result<(), _>>()?;
    check(&final_counts.lock().expect("the job ended"), commands)
}

/// Every prefix counted exactly as many times as it was written.
fn check(counts: &BTreeMap<String, u64>, commands: u64) -> Result<(), String> {
    let expected: BTreeMap<String, u64> = PREFIXES
        .iter()
        .enumerate()
        .map(|(p, name)| (name.to_string(), (0..commands).filter(|i| *i as usize % PREFIXES.len() == p).count() as u64))
        .filter(|(_, n)| *n > 0)
        .collect();
    println!("counted {counts:?}, expected {expected:?}");
    if *counts != expected {
        return Err("a command was counted twice or never".into());
    }
    println!("{commands} commands counted exactly once");
    Ok(())
}

/// The example's work bound: `TARA_EXAMPLE_COMMANDS`, else `default` (the arguments are
/// timely's).
fn bound(default: u64) -> u64 {
    let given = std::env::var("TARA_EXAMPLE_COMMANDS").ok();
    given.map(|s| s.parse().expect("the bound is a number")).unwrap_or(default)
}
