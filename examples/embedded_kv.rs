//! The shortest embedding: a replicated key-value store inside a one-worker timely job, and a
//! client that puts keys, reads them back, prints some replies and stops.
//!
//! `cargo run --release --example embedded_kv -- 2000` (the number of keys; default 1000, or
//! `TARA_EXAMPLE_COMMANDS`). Exits non-zero if a read does not return what was written.

use std::collections::BTreeMap;
use std::sync::mpsc;

use tara::app::kv::{KvOp, KvResult, KvStore};
use tara::dataflow::{Deployment, Placement, Submit};
use tara::embed::{embed, step_until_stopped};
use tara::protocol::{Command, Params, Reply};
use tara::timely::dataflow::operators::{Input, Inspect};

/// The client's id, and how many of its commands may be in flight at once.
const CLIENT: u64 = 1;
const WINDOW: u64 = 100;

fn main() {
    let keys = bound(1000);
    let params = Params::default();
    let placement = Placement::spread(&params, 1, 1).expect("one worker hosts every stage");
    let deployment = Deployment::new(params, placement).durable_records(false);
    let control = deployment.control.clone();
    let mismatches = tara::timely::execute_directly(move |worker| {
        let (reply_tx, replies) = mpsc::channel::<Reply>();
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, submissions) = scope.new_input::<Vec<Submit>>();
            let tara = embed(scope, submissions, &deployment, |_| KvStore::default()).expect("valid deployment");
            tara.replies.inspect(move |reply| drop(reply_tx.send(reply.clone())));
            input
        });
        // Commands 1..=keys put key i, commands keys+1..=2*keys get it back.
        let op = |t: u64| match t {
            t if t <= keys => KvOp::Put { key: format!("key{t}"), value: t.to_string().into_bytes() },
            t => KvOp::Get { key: format!("key{}", t - keys) },
        };
        let (total, mut sent) = (2 * keys, 0);
        // The client takes the first reply to each command (every executor replica replies).
        let mut answers: BTreeMap<u64, KvResult> = BTreeMap::new();
        while (answers.len() as u64) < total {
            // Reads go out once every write was answered, so each sees its write.
            let limit = if (answers.len() as u64) < keys { keys } else { total };
            while sent < limit && sent < answers.len() as u64 + WINDOW {
                sent += 1;
                input.send(Submit { source: 0, command: Command::new(CLIENT, sent, op(sent).encode()) });
            }
            input.flush();
            worker.step();
            for reply in replies.try_iter() {
                let result = KvResult::decode(&reply.result).expect("the store's own result");
                answers.entry(reply.timestamp).or_insert(result);
            }
        }
        control.stop();
        step_until_stopped(worker, &control, input);
        for t in [1, keys, keys + 1, total] {
            println!("{} -> {}", show(&op(t)), show_result(&answers[&t]));
        }
        let wrong = (1..=keys).filter(|&i| answers[&(keys + i)] != KvResult::Value(Some(i.to_string().into_bytes())));
        wrong.count()
    });
    println!("{keys} puts and {keys} gets answered, {mismatches} reads wrong");
    if mismatches > 0 {
        std::process::exit(1);
    }
}

/// The example's work bound: the first argument, else `TARA_EXAMPLE_COMMANDS`, else `default`.
fn bound(default: u64) -> u64 {
    let given = std::env::args().nth(1).or_else(|| std::env::var("TARA_EXAMPLE_COMMANDS").ok());
    given.map(|s| s.parse().expect("the bound is a number")).unwrap_or(default)
}

/// An operation, readably.
fn show(op: &KvOp) -> String {
    match op {
        KvOp::Put { key, value } => format!("put {key} = {}", String::from_utf8_lossy(value)),
        KvOp::Get { key } => format!("get {key}"),
        KvOp::Delete { key } => format!("delete {key}"),
    }
}

/// A result, readably.
fn show_result(result: &KvResult) -> String {
    match result {
        KvResult::Value(Some(value)) => String::from_utf8_lossy(value).into_owned(),
        KvResult::Value(None) => "(none)".into(),
        KvResult::Malformed(error) => format!("error: {error}"),
    }
}
