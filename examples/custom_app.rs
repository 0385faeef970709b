//! A user-defined replicated service: bank accounts with transfers that must never make a
//! balance negative. Clients send random transfers through an embedded TARA; at the end a
//! read through the log checks that money was conserved, no balance is negative, and every
//! executor replica answered every command alike.
//!
//! `cargo run --release --example custom_app -- 3000` (the number of transfers; default 3000,
//! or `TARA_EXAMPLE_COMMANDS`). Exits non-zero if a check fails.

use std::collections::BTreeMap;
use std::sync::mpsc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tara::app::{Application, RestoreError};
use tara::dataflow::{Deployment, Placement, Submit};
use tara::embed::{embed, step_until_stopped};
use tara::protocol::{Command, Params, Reply};
use tara::timely::dataflow::operators::{Input, Inspect};

/// Accounts, and the balance each opens with.
const ACCOUNTS: u32 = 8;
const OPENING: i64 = 100;
/// Clients sending transfers concurrently.
const CLIENTS: u64 = 4;

/// An operation of the bank.
#[derive(Serialize, Deserialize)]
enum BankOp {
    /// Moves `amount` from `from` to `to`, unless `from` holds less.
    Transfer { from: u32, to: u32, amount: i64 },
    /// Reads every balance.
    Balances,
}

/// The bank's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum BankResult {
    /// The transfer happened.
    Done,
    /// The transfer was refused: `from` held less than the amount (or the accounts or amount
    /// were invalid).
    Refused,
    /// Every balance, by account.
    Balances(BTreeMap<u32, i64>),
    /// The operation bytes did not decode.
    Malformed,
}

/// The replicated state: a balance per account.
struct Bank {
    balances: BTreeMap<u32, i64>,
}

impl Bank {
    fn open() -> Bank {
        Bank { balances: (0..ACCOUNTS).map(|a| (a, OPENING)).collect() }
    }

    fn apply(&mut self, op: BankOp) -> BankResult {
        match op {
            BankOp::Transfer { from, to, amount } => {
                let valid = from != to && amount > 0 && self.balances.contains_key(&to);
                match self.balances.get_mut(&from) {
                    Some(balance) if valid && *balance >= amount => *balance -= amount,
                    _ => return BankResult::Refused, // The rule: no balance goes negative.
                }
                *self.balances.entry(to).or_default() += amount;
                BankResult::Done
            }
            BankOp::Balances => BankResult::Balances(self.balances.clone()),
        }
    }
}

impl Application for Bank {
    fn execute(&mut self, op: &[u8]) -> Vec<u8> {
        // Operation bytes come from clients: a bad one gets an answer, never a panic.
        let result = bincode::deserialize(op).map_or(BankResult::Malformed, |op| self.apply(op));
        bincode::serialize(&result).unwrap_or_default()
    }

    fn snapshot(&self) -> Vec<u8> {
        bincode::serialize(&self.balances).unwrap_or_default()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        self.balances = bincode::deserialize(snapshot).map_err(|e| RestoreError(e.to_string()))?;
        Ok(())
    }
}

fn main() {
    let transfers = bound(3000);
    let params = Params::default();
    let window = params.client_window;
    let placement = Placement::spread(&params, 1, 1).expect("one worker hosts every stage");
    let deployment = Deployment::new(params, placement).durable_records(false);
    let control = deployment.control.clone();
    // Every executor replica's answer to each `(client, timestamp)`.
    let answers = tara::timely::execute_directly(move |worker| {
        let (reply_tx, replies) = mpsc::channel::<Reply>();
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, submissions) = scope.new_input::<Vec<Submit>>();
            let tara = embed(scope, submissions, &deployment, |_replica| Bank::open()).expect("valid deployment");
            tara.replies.inspect(move |reply| drop(reply_tx.send(reply.clone())));
            input
        });
        let mut rng = SmallRng::seed_from_u64(7);
        let mut answers = BTreeMap::<(u64, u64), Vec<BankResult>>::new();
        let mut sent = vec![0; CLIENTS as usize];
        let answered = |answers: &BTreeMap<(u64, u64), _>, client| answers.range((client, 0)..(client + 1, 0)).count();
        // Each client sends its share of the transfers, then one read of every balance.
        let share = transfers.div_ceil(CLIENTS);
        while (0..CLIENTS).any(|c| answered(&answers, c + 1) as u64 <= share) {
            for client in 1..=CLIENTS {
                let (next, done) = (&mut sent[client as usize - 1], answered(&answers, client) as u64);
                let mut send = |timestamp, op: BankOp| {
                    let op = bincode::serialize(&op).expect("an operation encodes");
                    input.send(Submit { source: 0, command: Command::new(client, timestamp, op) });
                };
                while *next < share && *next < done + window {
                    *next += 1;
                    let (from, to) = (rng.random_range(0..ACCOUNTS), rng.random_range(0..ACCOUNTS));
                    send(*next, BankOp::Transfer { from, to, amount: rng.random_range(1..=OPENING) });
                }
                // The read goes out once all of this client's transfers were answered.
                if *next == share && done == share {
                    *next += 1;
                    send(*next, BankOp::Balances);
                }
            }
            input.flush();
            worker.step();
            for reply in replies.try_iter() {
                let result = bincode::deserialize(&reply.result).unwrap_or(BankResult::Malformed);
                answers.entry((reply.client, reply.timestamp)).or_default().push(result);
            }
        }
        control.stop();
        step_until_stopped(worker, &control, input);
        answers
    });
    if let Err(failed) = check(&answers) {
        eprintln!("check failed: {failed}");
        std::process::exit(1);
    }
}

/// Checks the replies: every replica answered alike, money was conserved, no balance is
/// negative, and the no-negative rule was exercised (some transfers refused).
fn check(answers: &BTreeMap<(u64, u64), Vec<BankResult>>) -> Result<(), String> {
    let first = |(command, results): (&(u64, u64), &Vec<BankResult>)| {
        if results.windows(2).all(|w| w[0] == w[1]) {
            Ok(results[0].clone())
        } else {
            Err(format!("replicas answered {command:?} differently: {results:?}"))
        }
    };
    let results: Vec<BankResult> = answers.iter().map(first).collect::<Result<_, _>>()?;
    let count = |wanted: &BankResult| results.iter().filter(|r| *r == wanted).count();
    let (done, refused) = (count(&BankResult::Done), count(&BankResult::Refused));
    let total = i64::from(ACCOUNTS) * OPENING;
    for result in &results {
        if let BankResult::Balances(balances) = result {
            let sum: i64 = balances.values().sum();
            if sum != total || balances.values().any(|b| *b < 0) {
                return Err(format!("balances {balances:?} (total {sum}, expected {total})"));
            }
        }
    }
    let reads = results.iter().filter(|r| matches!(r, BankResult::Balances(_))).count();
    println!("{done} transfers done, {refused} refused; {reads} reads of all balances");
    if reads != CLIENTS as usize || refused == 0 || done == 0 {
        return Err("every client reads once at the end, and the workload both moves and refuses money".into());
    }
    println!("total {total} conserved, no balance negative, replicas agree");
    Ok(())
}

/// The example's work bound: the first argument, else `TARA_EXAMPLE_COMMANDS`, else `default`.
fn bound(default: u64) -> u64 {
    let given = std::env::args().nth(1).or_else(|| std::env::var("TARA_EXAMPLE_COMMANDS").ok());
    given.map(|s| s.parse().expect("the bound is a number")).unwrap_or(default)
}
