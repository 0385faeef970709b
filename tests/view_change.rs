//! View change, replica crashes and recovery (Section III-E) on the embedded cluster, checked for
//! linearizability.

mod common;
#[path = "common/history.rs"]
mod history;
#[path = "common/linearizability.rs"]
mod linearizability;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{description, positions_agree, stat, wait_until, within};
use history::Recorder;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tara::app::kv::{KvOp, KvStore};
use tara::cluster::{Cluster, Options};
use tara::dataflow::Stage;

/// How long a test waits for an event it expects (a view change, the service resuming): long
/// enough for a loaded machine; a healthy cluster needs well under a second.
const EVENT: Duration = Duration::from_secs(60);

/// The view executor 0 is in.
fn view(cluster: &Cluster) -> u64 {
    stat(cluster, Stage::Executor, 0, |s| &s.view)
}

/// The active proposer crashes in the middle of a workload; the controllers start a
/// new view, the new proposer takes over from the committers' records, and the service goes on.
/// Every request committed before the view change keeps its sequence number, the history is
/// linearizable, and the executors agree.
#[test]
fn a_proposer_crash_changes_the_view_and_loses_nothing() {
    within(300, || {
        let (executed_tx, executed) = crossbeam_channel::unbounded();
        let d = description("view_timeout_ms = 100\nbatch_size = 4");
        let options = Options { executed: Some(executed_tx), ..Options::default() };
        let cluster = Cluster::start_with(&d, |_| KvStore::default(), options).unwrap();
        let start = Instant::now();
        let mut clients = Recorder::new(&cluster, 6, 5, 7, start);
        assert!(clients.run_until(EVENT, |c| c.completed() >= 50), "the service never served");
        cluster.control().crash(Stage::Proposer, 0).unwrap();
        let before = clients.completed();
        assert!(clients.run_until(EVENT, |_| view(&cluster) >= 1), "no view change");
        assert!(clients.run_until(EVENT, |c| c.completed() > before + 50), "the service did not resume");
        cluster.control().restart(Stage::Proposer, 0).unwrap();
        let after = clients.completed();
        assert!(clients.run_until(EVENT, |c| c.completed() > after + 20), "no progress after the restart");
        assert!(clients.drain(EVENT) && clients.read_all(EVENT));
        linearizability::check(clients.history()).unwrap();
        assert!(cluster.quiesce(EVENT));
        assert!(cluster.stop().digests_agree());
        let positions = positions_agree(&executed).unwrap();
        assert!(positions > 100, "only {positions} positions");
    });
}

/// The paper's Figure 8 with small times: proposer 0 crashes and is restarted
/// automatically 300 ms later; then the new leader crashes; the service continues after both.
/// Each crash waits for the event it depends on (the view change and the service resuming),
/// not for a point in time.
#[test]
fn two_successive_proposer_crashes_with_automatic_restart() {
    within(300, || {
        let d = description("view_timeout_ms = 100\nbatch_size = 4");
        let cluster = Cluster::start(&d, |_| KvStore::default()).unwrap();
        let start = Instant::now();
        let mut clients = Recorder::new(&cluster, 6, 5, 11, start);
        assert!(clients.run_until(EVENT, |c| c.completed() >= 50), "the service never served");
        let faults = vec!["proposers:0@0+300".parse().unwrap()];
        let scheduler = tara::cluster::faults::schedule(cluster.control().clone(), faults);
        let before = clients.completed();
        assert!(clients.run_until(EVENT, |c| view(&cluster) >= 1 && c.completed() > before + 20), "no resumption");
        assert!(clients.run_until(EVENT, |_| scheduler.is_finished()), "the restart never happened");
        scheduler.join().unwrap();
        // The leader of the current view (proposer 1 unless a view change timed out meanwhile).
        let (first_view, before) = (view(&cluster), clients.completed());
        let leader = tara::protocol::leader_of(first_view, 2);
        cluster.control().crash(Stage::Proposer, leader).unwrap();
        let resumed = clients.run_until(EVENT, |c| view(&cluster) > first_view && c.completed() > before + 20);
        assert!(resumed, "no resumption after the second crash (view {})", view(&cluster));
        assert!(view(&cluster) >= 2, "two view changes expected");
        cluster.control().restart(Stage::Proposer, leader).unwrap();
        assert!(clients.drain(EVENT) && clients.read_all(EVENT));
        linearizability::check(clients.history()).unwrap();
        assert!(cluster.quiesce(EVENT));
        assert!(cluster.stop().digests_agree());
    });
}

/// The amnesia case of Section III-E, step by step. A request commits with the votes of
/// committers 0 and 1 only (committer 2 and executor 2 miss it). Committer 1 restarts, committer
/// 0 crashes, then the proposer crashes: the new proposer takes over from the records of
/// committers 1 and 2. If committer 1 forgot its record, nobody tells the new proposer about the
/// committed request, its sequence number gets another request, and executor 2 diverges.
/// Returns whether all executors converged and agree.
fn amnesia_scenario(durable_records: bool) -> bool {
    let d = tara::cluster::Description {
        durable_records,
        ..description("view_timeout_ms = 100\nbatch_size = 1\nwindow = 64\ncheckpoint_interval = 64")
    };
    let cluster = Cluster::start(&d, |_| KvStore::default()).unwrap();
    let control = cluster.control().clone();
    let mut client = cluster.client();
    client.set_deadline(EVENT);
    let put = |k: &str, v: &str| KvOp::Put { key: k.into(), value: v.as_bytes().to_vec() }.encode();
    for i in 0..3 {
        client.invoke(put("warm", &i.to_string())).unwrap();
    }
    control.set_deaf(Stage::Committer, 2, true).unwrap();
    control.set_deaf(Stage::Executor, 2, true).unwrap();
    client.invoke(put("x", "committed")).unwrap();
    control.crash(Stage::Committer, 1).unwrap();
    control.restart(Stage::Committer, 1).unwrap();
    assert!(wait_until(EVENT, || stat(&cluster, Stage::Committer, 1, |s| &s.held) > 0 || !durable_records));
    control.crash(Stage::Committer, 0).unwrap();
    control.set_deaf(Stage::Committer, 2, false).unwrap();
    control.crash(Stage::Proposer, 0).unwrap();
    control.set_deaf(Stage::Executor, 2, false).unwrap();
    client.invoke(put("y", "after the view change")).unwrap();
    control.restart(Stage::Committer, 0).unwrap();
    control.restart(Stage::Proposer, 0).unwrap();
    // Executors that never converge are broken agreement too (one of them may be stuck on a
    // slot the others filled differently).
    let quiet = cluster.quiesce(EVENT);
    quiet && cluster.stop().digests_agree()
}

/// With durable records the amnesia case is harmless...
#[test]
fn durable_records_prevent_amnesia() {
    within(300, || assert!(amnesia_scenario(true), "executors diverged although records are durable"));
}

/// ...and without them the same scenario breaks agreement, which shows the test above would
/// fail if the record log stopped doing its job. Whether the forgotten request is repaired before
/// the view change depends on thread timing, so the scenario gets three tries to expose it
/// (it did in the first try in most runs; one CI run in about ten needed a second).
#[test]
fn without_durable_records_the_amnesia_case_breaks_agreement() {
    within(600, || assert!((0..3).any(|_| !amnesia_scenario(false)), "the scenario never exposed amnesia in 3 tries"));
}

/// One seeded run: random crashes and restarts of any replica (never more than f of a stage
/// down at once), proposer crashes at random moments, clients recording real-time histories.
fn fault_run(seed: u64) -> Result<(), String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let d = description(&format!(
        "view_timeout_ms = {}\nbatch_size = {}",
        rng.random_range(40..100),
        [1, 4, 16][rng.random_range(0..3)]
    ));
    let cluster = Cluster::start(&d, |_| KvStore::default()).map_err(|e| e.to_string())?;
    let stages = [Stage::Source, Stage::Proposer, Stage::Committer, Stage::Executor, Stage::Gc, Stage::Controller];
    let mut down: HashMap<Stage, (u32, Instant)> = HashMap::new();
    let start = Instant::now();
    let mut clients = Recorder::new(&cluster, 4, 3, seed, start);
    let control = cluster.control().clone();
    for _ in 0..rng.random_range(3..7) {
        clients.run_for(Duration::from_millis(rng.random_range(30..120)));
        for (stage, (replica, since)) in down.clone() {
            if since.elapsed() > Duration::from_millis(rng.random_range(20..200)) {
                control.restart(stage, replica)?;
                down.remove(&stage);
            }
        }
        let stage = if rng.random_bool(0.4) { Stage::Proposer } else { stages[rng.random_range(0..stages.len())] };
        if let std::collections::hash_map::Entry::Vacant(slot) = down.entry(stage) {
            let replica = if stage == Stage::Proposer {
                // The active proposer: the one whose view the executors are in.
                tara::protocol::leader_of(stat(&cluster, Stage::Executor, 0, |s| &s.view), 2)
            } else {
                rng.random_range(0..stage.replicas(cluster.params()) as u32)
            };
            control.crash(stage, replica)?;
            slot.insert((replica, Instant::now()));
        }
    }
    for (stage, (replica, _)) in down.drain() {
        control.restart(stage, replica)?;
    }
    clients.run_for(Duration::from_millis(100));
    if !clients.drain(EVENT) || !clients.read_all(EVENT) {
        return Err("commands did not complete after the faults stopped".into());
    }
    linearizability::check(clients.history())?;
    if !cluster.quiesce(EVENT) {
        return Err("executors did not converge".into());
    }
    if !cluster.stop().digests_agree() {
        return Err("executor digests differ".into());
    }
    Ok(())
}

/// At least 200 seeded runs of random fault schedules per CI run
/// (`TARA_FAULT_RUNS` for more, `TARA_FAULT_SEED` to replay one). Every history is linearizable
/// (so no acknowledged write is lost: the final reads see it), executors agree.
#[test]
fn random_fault_schedules() {
    let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let (runs, first) = (number("TARA_FAULT_RUNS").unwrap_or(200), number("TARA_FAULT_FIRST_SEED").unwrap_or(1));
    let seeds: Vec<u64> = match number("TARA_FAULT_SEED") {
        Some(seed) => vec![seed],
        None => (first..first + runs).collect(),
    };
    let started = Instant::now();
    for seed in &seeds {
        let seed = *seed;
        let result = within(300, move || fault_run(seed));
        if let Err(e) = result {
            panic!(
                "fault run with seed {seed} failed: {e}\nreplay: TARA_FAULT_SEED={seed} cargo test --release --test view_change random_fault_schedules -- --nocapture"
            );
        }
    }
    println!("{} fault runs in {:.1} s", seeds.len(), started.elapsed().as_secs_f64());
}
