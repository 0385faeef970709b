//! The deterministic simulator: thousands of seeded fault schedules in every CI run.
//!
//! `cargo test --release --test simulation` runs `TARA_SIM_SEEDS` seeds (4,000 by default) of
//! randomly shaped f = 1 and f = 2 deployments with P = 1 to 4 partitions (Section IV: per
//! partition its own sources, proposers, committers and controllers, commits merged into one
//! execution order in front of the shared executors), the clients spread over the partitions or,
//! in some seeds, all in one partition, so that the idle ones must fill the merge's slots with
//! no-ops; under a lossy, duplicating, reordering network with replica crashes (in any partition)
//! and restarts; a failure prints its seed and the command that replays it with a trace of every
//! tuple. `TARA_SIM_SEEDS=20000` is the long sweep.

#[path = "common/linearizability.rs"]
mod linearizability;
mod sim;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sim::config::Load;
use sim::{SimConfig, run};
use tara::protocol::mutation::Mutation;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Totals over the seeds of a sweep, to show that the faults really happened.
#[derive(Default)]
struct Totals {
    ran: AtomicU64,
    events: AtomicU64,
    completed: AtomicU64,
    crashes: AtomicU64,
    dropped: AtomicU64,
    transfers: AtomicU64,
    nacks: AtomicU64,
    disk_faults: AtomicU64,
    disk_failures: AtomicU64,
    refusals: AtomicU64,
    damaged: AtomicU64,
    /// Seeds with a silent client, and clients told "session expired".
    silent_seeds: AtomicU64,
    sessions_expired: AtomicU64,
    /// Seeds per number of partitions (index P - 1), and the microseconds they took.
    by_partitions: [AtomicU64; 4],
    micros_by_partitions: [AtomicU64; 4],
    /// The slowest seed: (microseconds, seed).
    slowest: std::sync::Mutex<(u64, u64)>,
    /// Seeds whose clients all fall into one partition of several.
    skewed: AtomicU64,
    fill_asks: AtomicU64,
    filled: AtomicU64,
    /// Seeds in which an idle partition filled slots for the merge.
    seeds_filled: AtomicU64,
    view_changes: AtomicU64,
    seeds_with_view_change: AtomicU64,
    merged: AtomicU64,
}

/// Runs seeds `first..first + count` on all cores; returns the failures' reports.
fn sweep(first: u64, count: u64, mutation: Option<Mutation>, stop_at_first: bool) -> (Vec<String>, u64) {
    let (failures, totals) = sweep_totals(first, count, mutation, stop_at_first);
    (failures, totals.ran.load(Ordering::Relaxed))
}

fn sweep_totals(first: u64, count: u64, mutation: Option<Mutation>, stop_at_first: bool) -> (Vec<String>, Totals) {
    let next = AtomicU64::new(first);
    let totals = Totals::default();
    let ran = &totals.ran;
    let failures = std::sync::Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= first + count || (stop_at_first && !failures.lock().unwrap().is_empty()) {
                        return;
                    }
                    let config = SimConfig { mutation, ..SimConfig::from_seed(seed) };
                    ran.fetch_add(1, Ordering::Relaxed);
                    totals.disk_faults.fetch_add(config.disk_fault.is_some() as u64, Ordering::Relaxed);
                    totals.silent_seeds.fetch_add(config.silence.is_some() as u64, Ordering::Relaxed);
                    totals.by_partitions[config.params.partitions - 1].fetch_add(1, Ordering::Relaxed);
                    let skewed = matches!(config.load, Load::Skewed { .. });
                    totals.skewed.fetch_add(skewed as u64, Ordering::Relaxed);
                    let (partitions, started) = (config.params.partitions, Instant::now());
                    let result = run(config, false);
                    let micros = started.elapsed().as_micros() as u64;
                    totals.micros_by_partitions[partitions - 1].fetch_add(micros, Ordering::Relaxed);
                    let mut slowest = totals.slowest.lock().unwrap();
                    *slowest = (*slowest).max((micros, seed));
                    drop(slowest);
                    match result {
                        Ok(o) => {
                            let add = |counter: &AtomicU64, n: u64| counter.fetch_add(n, Ordering::Relaxed);
                            add(&totals.events, o.events);
                            add(&totals.completed, o.completed);
                            add(&totals.crashes, o.crashes);
                            add(&totals.dropped, o.dropped);
                            add(&totals.transfers, o.transfers);
                            add(&totals.nacks, o.nacks);
                            add(&totals.disk_failures, o.disk_failures);
                            add(&totals.refusals, o.refusals);
                            add(&totals.damaged, o.damaged);
                            add(&totals.sessions_expired, o.sessions_expired);
                            add(&totals.fill_asks, o.fill_asks);
                            add(&totals.filled, o.filled);
                            add(&totals.seeds_filled, (o.filled > 0) as u64);
                            add(&totals.view_changes, o.view_changes);
                            add(&totals.seeds_with_view_change, (o.view_changes > 0) as u64);
                            add(&totals.merged, o.merged);
                        }
                        Err(failure) => failures.lock().unwrap().push((seed, failure.to_string())),
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    (failures.into_iter().map(|(_, failure)| failure).collect(), totals)
}

/// Safety, exactly-once, linearizability and liveness over many seeded fault schedules.
#[test]
fn seeds() {
    let count = env_u64("TARA_SIM_SEEDS", 4_000);
    let first = env_u64("TARA_SIM_FIRST_SEED", 1);
    let started = Instant::now();
    let (failures, totals) = sweep_totals(first, count, None, false);
    let seconds = started.elapsed().as_secs_f64();
    let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let ran = get(&totals.ran);
    println!("{ran} seeds in {seconds:.1} s ({:.0} seeds/s)", ran as f64 / seconds);
    println!(
        "events {}, commands completed {}, crashes {}, tuples dropped {}, state transfers {}, nacks {}",
        get(&totals.events),
        get(&totals.completed),
        get(&totals.crashes),
        get(&totals.dropped),
        get(&totals.transfers),
        get(&totals.nacks)
    );
    println!(
        "seeds with a disk fault {}, writes failed {}, files damaged at rest {}, starts refused {}",
        get(&totals.disk_faults),
        get(&totals.disk_failures),
        get(&totals.damaged),
        get(&totals.refusals)
    );
    println!(
        "seeds with a client silent past its session {}, clients told \"session expired\" {}",
        get(&totals.silent_seeds),
        get(&totals.sessions_expired)
    );
    let per_p: Vec<u64> = totals.by_partitions.iter().map(get).collect();
    let ms_per_seed: Vec<String> = (0..4)
        .map(|i| format!("{:.0}", get(&totals.micros_by_partitions[i]) as f64 / 1000.0 / per_p[i].max(1) as f64))
        .collect();
    let (slowest_us, slowest_seed) = *totals.slowest.lock().unwrap();
    println!(
        "seeds with P = 1, 2, 3, 4 partitions: {per_p:?} (ms per seed: {}; slowest: seed {}, {} ms), \
         all clients in one partition of several {}",
        ms_per_seed.join(", "),
        slowest_seed,
        slowest_us / 1000,
        get(&totals.skewed)
    );
    println!(
        "commits merged {}, fill requests {}, no-ops filled {} (in {} seeds), view changes {} (in {} seeds)",
        get(&totals.merged),
        get(&totals.fill_asks),
        get(&totals.filled),
        get(&totals.seeds_filled),
        get(&totals.view_changes),
        get(&totals.seeds_with_view_change)
    );
    for failure in failures.iter().take(20) {
        println!("{}", failure.lines().next().unwrap_or(""));
    }
    assert!(
        get(&totals.transfers) > 0 && get(&totals.nacks) > 0 && get(&totals.crashes) > 0,
        "the faults did not happen"
    );
    if ran >= 200 {
        assert!(per_p.iter().all(|n| *n * 10 >= ran), "fewer than 10% of the seeds drew some P: {per_p:?}");
        assert!(get(&totals.skewed) * 10 >= ran, "fewer than 10% of the seeds had skewed load");
        assert!(get(&totals.seeds_filled) > 0 && get(&totals.fill_asks) > 0, "no idle partition filled its slots");
        assert!(get(&totals.seeds_with_view_change) > 0, "no view change happened");
    }
    if ran >= 1_000 {
        assert!(get(&totals.disk_faults) * 10 >= ran, "fewer than 10% of the seeds drew a disk fault");
        assert!(
            get(&totals.disk_failures) > 0 && get(&totals.damaged) > 0 && get(&totals.refusals) > 0,
            "the disk faults did not happen"
        );
        assert!(get(&totals.sessions_expired) > 0, "no session expired under a silent client");
    }
    assert!(failures.is_empty(), "{} of {ran} seeds failed; the first:\n{}", failures.len(), failures[0]);
}

/// Replays one seed with a full trace: `TARA_SIM_SEED=n TARA_SIM_TRACE=1`.
#[test]
fn replay() {
    let Ok(seed) = std::env::var("TARA_SIM_SEED").map(|s| s.parse::<u64>().expect("a seed")) else { return };
    let trace = std::env::var("TARA_SIM_TRACE").is_ok();
    let config = SimConfig::from_seed(seed);
    println!("{config:#?}");
    match run(config, trace) {
        Ok(outcome) => println!("seed {seed} passed: {outcome:?}"),
        Err(failure) => panic!("{failure}"),
    }
}

/// Same seed, same run: the event fingerprint and every counter repeat exactly.
#[test]
fn runs_are_deterministic() {
    for seed in [3, 17, 99] {
        let a = run(SimConfig::from_seed(seed), false).expect("passes");
        let b = run(SimConfig::from_seed(seed), false).expect("passes");
        assert_eq!(a.fingerprint, b.fingerprint, "seed {seed}");
        assert_eq!((a.events, a.completed, a.dropped, a.crashes), (b.events, b.completed, b.dropped, b.crashes));
    }
}

/// The simulator catches deliberately broken variants of the protocol: each mutation fails the
/// safety check that its bug breaks, within the seeds tried. A mutation that only made a run
/// slow or stuck (liveness) would not count as caught, except for the one liveness bug.
#[test]
fn mutations_are_caught() {
    let cases: [(Mutation, &[&str]); 7] = [
        // Re-executing a duplicate is exactly what the exactly-once check looks for.
        (Mutation::SkipDuplicateCheck, &["exactly-once"]),
        // Executing committed instances before their predecessors runs some command twice (once
        // early, once in its place) or builds another history.
        (Mutation::ExecuteOutOfOrder, &["exactly-once", "digests agree"]),
        // A restored executor without its client table executes retransmissions again, or
        // refuses the commands of sessions it no longer holds (session expired) that the other
        // executors execute: its history diverges (seen first with `max_in_flight` bounds).
        (Mutation::CheckpointForgetsClients, &["exactly-once", "digests agree"]),
        // A source that never flushes never proposes: a liveness bug, caught as one.
        (Mutation::SourceNeverFlushes, &["liveness"]),
        // Committing on f votes lets a new proposer fill a slot that an executor already ran:
        // executors then diverge.
        (Mutation::CommitAfterF, &["digests agree", "agreement"]),
        // An amnesiac committer lets a new view re-propose a decided slot: divergence again.
        (Mutation::CommitterForgetsRecords, &["digests agree", "agreement"]),
        // Letting any command that claims no answers open a session executes a silent client's
        // retransmissions again once its session ended.
        (Mutation::UnansweredCommandsOpenSessions, &["exactly-once"]),
    ];
    for (mutation, checks) in cases {
        let (failures, ran) = sweep(1, 3_000, Some(mutation), true);
        assert!(!failures.is_empty(), "{mutation:?} survived {ran} seeds");
        for failure in &failures {
            let tripped = failure.split("failed check `").nth(1).and_then(|rest| rest.split('`').next());
            assert!(
                tripped.is_some_and(|check| checks.contains(&check)),
                "{mutation:?} must trip one of {checks:?}, but failed {tripped:?}:\n{failure}"
            );
        }
        println!("{mutation:?}: caught after {ran} seeds: {}", failures[0].lines().next().unwrap_or(""));
    }
}
