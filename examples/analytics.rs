//! Live analytics over a replicated coordination service: the number of znodes under each
//! top-level path and the ten most-written znodes, kept up to date by differential dataflow
//! from the state changes of the executed commands, printed whenever the frontier passes new
//! commands. At every frontier the views reflect a prefix of the log, never a torn state.
//!
//! `cargo run --release --example analytics -- 3000` (the number of commands; default 3000,
//! or `TARA_EXAMPLE_COMMANDS`). Exits non-zero if the final views differ from a recomputation
//! over the workload.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;

use tara::app::coordination::{CoordOp, Coordination};
use tara::dataflow::{Deployment, Placement, Submit};
use tara::embed::{AsStateUpdates, CoordUpdates, embed, step_until_stopped};
use tara::protocol::{Command, Params};
use tara::timely::dataflow::operators::{Input, Inspect, Probe};

/// The top-level znodes the workload writes under.
const TOPS: [&str; 3] = ["/config", "/locks", "/services"];
/// How many of the most-written znodes the view keeps.
const TOP_K: usize = 10;

/// A view's contents: each record's multiplicity, from its `(record, time, diff)` updates.
type View<D> = BTreeMap<D, isize>;
/// The most-written znodes as `(writes, path)`.
type Hottest = Vec<(u32, String)>;

fn main() {
    let commands = bound(3000).max(TOPS.len() as u64);
    let ops = workload(commands);
    let params = Params::default();
    let window = params.client_window;
    let placement = Placement::spread(&params, 1, 1).expect("one worker hosts every stage");
    let deployment = Deployment::new(params, placement).durable_records(false);
    let control = deployment.control.clone();
    let submitted = ops.clone();
    let (per_top, most_written) = tara::timely::execute_directly(move |worker| {
        let (top_tx, top_rx) = mpsc::channel();
        let (hot_tx, hot_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, submissions) = scope.new_input::<Vec<Submit>>();
            let tara = embed(scope, submissions, &deployment, |_| Coordination::default()).expect("valid deployment");
            let executed = tara.executed.inspect_core(move |event| {
                if let Ok((time, batch)) = event {
                    let _ = done_tx.send((*time.least().expect("a message has a time"), batch.len() as u64));
                }
            });
            let (probe, executed) = executed.probe();
            // Every znode as `(path, (data, version))`, as of the commands executed so far.
            let znodes = executed.as_state_updates(CoordUpdates::default());
            znodes
                .clone()
                .map(|(path, _)| top_level(&path))
                .count()
                .inspect(move |update| drop(top_tx.send(update.clone())))
                .probe_with(&probe);
            // A znode was written once at creation and once per version since.
            znodes
                .map(|(path, (_data, version))| ((), (u32::MAX - version, path)))
                .reduce(|_, by_writes, out| {
                    let hottest = by_writes.iter().take(TOP_K);
                    out.extend(hottest.map(|((rest, path), _)| ((u32::MAX - rest + 1, path.clone()), 1)));
                })
                .inspect(move |update| drop(hot_tx.send(update.clone())))
                .probe_with(&probe);
            (input, probe)
        });
        let (mut per_top, mut most_written) = (View::new(), View::new());
        let (mut sent, mut executed, mut last, mut printed, mut pending) = (0, 0, 0, 0, false);
        // Until every command executed and the views passed the time of the last one.
        while executed < commands || probe.less_equal(&last) {
            while sent < commands && sent < executed + window {
                input.send(Submit { source: 0, command: Command::new(1, sent + 1, ops[sent as usize].encode()) });
                sent += 1;
            }
            input.flush();
            worker.step();
            for (time, n) in done_rx.try_iter() {
                (executed, last) = (executed + n, last.max(time));
            }
            let mut latest = None;
            for ((top, n), time, diff) in top_rx.try_iter() {
                *per_top.entry((top, n)).or_default() += diff;
                latest = latest.max(Some(time));
            }
            for (((), hot), time, diff) in hot_rx.try_iter() {
                *most_written.entry(hot).or_default() += diff;
                latest = latest.max(Some(time));
            }
            per_top.retain(|_, n| *n != 0);
            most_written.retain(|_, n| *n != 0);
            if let Some(time) = latest {
                (printed, pending) = (printed.max(time), true);
            }
            // Print once the frontier passed every change received: the views of a log prefix.
            if pending && !probe.less_equal(&printed) {
                pending = false;
                print(executed, &per_top, &most_written);
            }
        }
        control.stop();
        step_until_stopped(worker, &control, input);
        (per_top, most_written)
    });
    let (expected_tops, expected_hot) = recompute(&submitted);
    let got_tops: Vec<(String, isize)> = per_top.keys().cloned().collect();
    let got_hot: Hottest = most_written.keys().cloned().collect();
    if got_tops != expected_tops || got_hot != expected_hot {
        eprintln!("views differ: {got_tops:?} vs {expected_tops:?}, {got_hot:?} vs {expected_hot:?}");
        std::process::exit(1);
    }
    println!("{commands} commands: the views equal a recomputation over the workload");
}

/// Prints the views (as of the commands executed up to a frontier).
fn print(executed: u64, per_top: &View<(String, isize)>, most_written: &View<(u32, String)>) {
    let tops: Vec<String> = per_top.keys().map(|(top, n)| format!("{top}={n}")).collect();
    let mut hot: Vec<&(u32, String)> = most_written.keys().collect();
    hot.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let hot: Vec<String> = hot.iter().take(3).map(|(n, path)| format!("{path}({n})")).collect();
    println!("after {executed} commands: znodes {} | most written {} ..", tops.join(" "), hot.join(" "));
}

/// The workload: create the top-level znodes, then write znodes under them, some far more
/// often than others (create the first time, set data after).
fn workload(commands: u64) -> Vec<CoordOp> {
    let mut created = BTreeSet::new();
    let mut ops: Vec<CoordOp> =
        TOPS.iter().map(|top| CoordOp::Create { path: top.to_string(), data: vec![], sequential: false }).collect();
    for j in 0..commands - TOPS.len() as u64 {
        let path = format!("{}/n{}", TOPS[j as usize % TOPS.len()], (j % 7) * (j % 11));
        let data = j.to_le_bytes().to_vec();
        ops.push(if created.insert(path.clone()) {
            CoordOp::Create { path, data, sequential: false }
        } else {
            CoordOp::SetData { path, data, version: None }
        });
    }
    ops
}

/// The views computed directly from the workload: znodes per top-level path, and the
/// `TOP_K` most-written znodes as `(writes, path)` (ties broken by path), in key order.
fn recompute(ops: &[CoordOp]) -> (Vec<(String, isize)>, Hottest) {
    let mut writes = BTreeMap::<String, u32>::new();
    for op in ops {
        if let CoordOp::Create { path, .. } | CoordOp::SetData { path, .. } = op {
            *writes.entry(path.clone()).or_default() += 1;
        }
    }
    let mut tops = BTreeMap::<String, isize>::new();
    writes.keys().for_each(|path| *tops.entry(top_level(path)).or_default() += 1);
    let mut hot: Vec<(u32, String)> = writes.into_iter().map(|(path, n)| (n, path)).collect();
    hot.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    hot.truncate(TOP_K);
    hot.sort();
    (tops.into_iter().collect(), hot)
}

/// The top-level path a znode lies under (itself if it is top-level).
fn top_level(path: &str) -> String {
    let end = path[1..].find('/').map_or(path.len(), |i| i + 1);
    path[..end].to_string()
}

/// The example's work bound: the first argument, else `TARA_EXAMPLE_COMMANDS`, else `default`.
fn bound(default: u64) -> u64 {
    let given = std::env::args().nth(1).or_else(|| std::env::var("TARA_EXAMPLE_COMMANDS").ok());
    given.map(|s| s.parse().expect("the bound is a number")).unwrap_or(default)
}
