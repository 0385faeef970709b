//! Repeated faults (a nemesis) on a multi-process cluster started by `tara cluster`: under load
//! from several TCP clients, kill -9 of a random process at least five times, and one process
//! paused with SIGSTOP and resumed with SIGCONT. The whole register history is linearizable
//! (so no acknowledged write is lost: the final reads see it), every sequential create took
//! effect exactly once however often it was retried, and the executors agree. Each fault's
//! downtime (the fault -> the first answer after it) is printed. `TARA_NEMESIS_SECONDS` turns it
//! into a longer soak: faults go on until that many seconds have passed.

mod common;
#[path = "common/coord_workload.rs"]
mod coord_workload;
#[path = "common/linearizability.rs"]
mod linearizability;
#[path = "common/procs.rs"]
mod procs;

use std::time::{Duration, Instant};

use common::within;
use coord_workload::{Workload, check_creates, create_znodes, read_every_register};
use procs::LocalCluster;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tara::client::Client;

/// How long the test waits for an event it expects (a restart, an answer): generous, for a
/// loaded machine.
const EVENT: Duration = Duration::from_secs(60);

/// The kills every run makes at least.
const KILLS: usize = 5;

/// Runs the workload until an answer arrives that was received after `since_us`, and returns
/// the milliseconds from `since_us` to it; None if none came within [`EVENT`].
fn first_answer_after(workload: &mut Workload, since_us: u64) -> Option<f64> {
    let until = Instant::now() + EVENT;
    while Instant::now() < until {
        if let Some((_, at, _)) = workload.answered.iter().rev().find(|(_, at, _)| *at > since_us) {
            return Some((at - since_us) as f64 / 1000.0);
        }
        workload.run_for(Duration::from_millis(10));
    }
    None
}

/// Kills -9 a random process, waits until the supervisor has noticed it and has the cluster
/// serving again, and for the first answer after the kill; returns the downtime in
/// milliseconds. Restarts are counted from the log, not assumed: on a loaded machine the
/// supervisor may also restart a cluster whose probe went unanswered.
fn kill_one(cluster: &LocalCluster, workload: &mut Workload, rng: &mut SmallRng) -> f64 {
    let victim = rng.random_range(0..3);
    let pattern = format!(": process {victim} exited (signal: 9");
    let (seen, served) = (cluster.lines(&pattern).len(), cluster.lines("serving again").len());
    let killed = workload.now_us();
    cluster.signal(victim, "-KILL");
    // Survivors may still answer until the supervisor notices and restarts every process: the
    // downtime ends with the first answer after the supervisor noticed.
    let noticed = Instant::now() + EVENT;
    while cluster.lines(&pattern).len() <= seen && Instant::now() < noticed {
        workload.run_for(Duration::from_millis(10));
    }
    assert!(cluster.lines(&pattern).len() > seen, "the supervisor did not notice the kill of process {victim}");
    let noticed = workload.now_us();
    let downtime =
        first_answer_after(workload, noticed).expect("no answer after the kill") + (noticed - killed) as f64 / 1000.0;
    let serving = Instant::now() + EVENT;
    while cluster.lines("serving again").len() <= served && Instant::now() < serving {
        workload.run_for(Duration::from_millis(20));
    }
    assert!(cluster.lines("serving again").len() > served, "the cluster did not come back after the kill");
    eprintln!("nemesis: kill -9 of process {victim}: first answer {downtime:.0} ms after the kill");
    downtime
}

/// SIGSTOPs a random process for 300 ms (shorter than the probe timeout: a pause, not a hang
/// the supervisor acts on) and SIGCONTs it; returns the milliseconds from the stop to the first
/// answer after the resume.
fn pause_one(cluster: &LocalCluster, workload: &mut Workload, rng: &mut SmallRng) -> f64 {
    let victim = rng.random_range(0..3);
    let stopped = workload.now_us();
    cluster.signal(victim, "-STOP");
    workload.run_for(Duration::from_millis(300));
    cluster.signal(victim, "-CONT");
    let resumed = workload.now_us();
    let downtime = first_answer_after(workload, resumed).expect("no answer after SIGCONT");
    let total = (resumed - stopped) as f64 / 1000.0 + downtime;
    eprintln!("nemesis: SIGSTOP of process {victim} for 300 ms: first answer {downtime:.0} ms after SIGCONT");
    total
}

#[test]
fn repeated_kills_and_a_pause_lose_nothing() {
    let soak = std::env::var("TARA_NEMESIS_SECONDS").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    within(300 + 2 * soak, move || {
        // Probes every 100 ms; a process that does not answer for 2 s is restarted (longer
        // than the pause below, so that it stays a pause).
        let cluster = LocalCluster::start(
            "checkpoint_interval = 32\nwindow = 64\nprobe_interval_ms = 100\nprobe_timeout_ms = 2000",
        );
        let mut admin = Client::new(cluster.pool());
        admin.set_deadline(EVENT);
        create_znodes(&mut admin);
        let mut workload = Workload::new(cluster.pool(), 8);
        let mut rng = SmallRng::seed_from_u64(std::process::id() as u64);
        let started = Instant::now();
        let (mut kills, mut downtimes) = (0, Vec::new());
        while kills < KILLS || started.elapsed() < Duration::from_secs(soak) {
            workload.run_for(Duration::from_millis(rng.random_range(300..800)));
            if kills == 2 {
                downtimes.push(("SIGSTOP", pause_one(&cluster, &mut workload, &mut rng)));
                workload.run_for(Duration::from_millis(300));
            }
            downtimes.push(("kill -9", kill_one(&cluster, &mut workload, &mut rng)));
            kills += 1;
        }
        workload.run_for(Duration::from_millis(500));
        assert!(workload.drain(EVENT), "commands outstanding after the faults");
        assert!(workload.retried > 0, "no command was retried across a fault");
        read_every_register(&mut admin, &mut workload);
        linearizability::check(&workload.history).expect("the history is linearizable");
        check_creates(&mut admin, &workload.creates);
        assert!(workload.creates.values().filter(|acked| **acked).count() > 10, "too few creates to check");
        assert!(cluster.remote().executors_agree(3, EVENT), "the executors disagree");
        let kill_ms: Vec<f64> = downtimes.iter().filter(|(k, _)| *k == "kill -9").map(|(_, d)| *d).collect();
        eprintln!(
            "nemesis: {kills} kills, downtime per kill (ms): {kill_ms:.0?}, mean {:.0}; {} answers in {:.1} s",
            kill_ms.iter().sum::<f64>() / kill_ms.len() as f64,
            workload.answered.len(),
            started.elapsed().as_secs_f64()
        );
    });
}
