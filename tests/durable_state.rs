//! The durable-state policy on the embedded cluster, under load, with failpoints in the real
//! storage layer: a failed write is never acknowledged and stops its replica; a torn log tail is
//! cut back; damage, a missing file or an unreadable directory make a replica refuse to start
//! with an error that names the file. Every test checks that no acknowledged command is lost
//! (a linearizable history with final reads), that executors agree, and that a committer that
//! comes back has its records (no amnesia).

mod common;
#[path = "common/history.rs"]
mod history;
#[path = "common/linearizability.rs"]
mod linearizability;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{description, within};
use history::Recorder;
use tara::app::kv::KvStore;
use tara::cluster::{Cluster, Options};
use tara::dataflow::{ReplicaFailure, ReplicaStats, Stage};
use tara::storage::{Action, Failpoint, Faulty, FsDisk, Op, Problem};

struct Run {
    cluster: Cluster,
    clients: Recorder,
    disk: Faulty<FsDisk>,
    _state: tempfile::TempDir,
}

fn start(overrides: &str) -> Run {
    start_with(overrides, |_| {})
}

fn start_with(overrides: &str, change: impl FnOnce(&mut tara::cluster::Description)) -> Run {
    let state = tempfile::tempdir().unwrap();
    let disk = Faulty::new(FsDisk);
    let options =
        Options { state_dir: Some(state.path().into()), disk: Some(Arc::new(disk.clone())), ..Options::default() };
    let mut d = description(&format!("view_timeout_ms = 100\nbatch_size = 4\n{overrides}"));
    change(&mut d);
    let cluster = Cluster::start_with(&d, |_| KvStore::default(), options).unwrap();
    let clients = Recorder::new(&cluster, 6, 5, 7, Instant::now());
    Run { cluster, clients, disk, _state: state }
}

impl Run {
    fn dir(&self, name: &str) -> PathBuf {
        self.cluster.state_dir().join(name)
    }

    fn stat(&self, stage: Stage, replica: u32, get: impl Fn(&ReplicaStats) -> u64) -> u64 {
        get(self.cluster.control().stats(stage, replica).unwrap())
    }

    /// Waits for the failure of `replica` of `stage`, under load.
    fn failure(&mut self, stage: Stage, replica: u32) -> ReplicaFailure {
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            self.clients.run_for(Duration::from_millis(50));
            let failures = self.cluster.control().failures();
            if let Some(f) = failures.into_iter().find(|f| f.stage == stage && f.replica == replica) {
                return f;
            }
        }
        panic!("{stage:?} {replica} never failed");
    }

    /// Crashes `replica` of `stage` and waits, under load, until the crash took effect: its
    /// writer has finished, so damage done to its files from now on stays until it restarts.
    fn crash(&mut self, stage: Stage, replica: u32) {
        self.cluster.control().crash(stage, replica).unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        while !self.cluster.control().stats(stage, replica).unwrap().is_halted() {
            assert!(Instant::now() < until, "the crash of {stage:?} {replica} never took effect");
            self.clients.run_for(Duration::from_millis(20));
        }
    }

    /// Drains, reads every key, and checks the history, convergence and agreement.
    fn finish(mut self) {
        self.clients.run_for(Duration::from_millis(200));
        assert!(self.clients.drain(Duration::from_secs(20)), "commands did not complete");
        assert!(self.clients.read_all(Duration::from_secs(20)), "final reads did not complete");
        linearizability::check(self.clients.history()).unwrap();
        assert!(self.cluster.quiesce(Duration::from_secs(30)), "executors did not converge");
        assert!(self.cluster.stop().digests_agree(), "executors disagree");
    }

    /// Restarts a committer and checks that it came back with its records and its view.
    fn restart_committer(&mut self, replica: u32) {
        let view_before = self.stat(Stage::Executor, 0, |s| ReplicaStats::get(&s.view));
        self.cluster.control().restart(Stage::Committer, replica).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while self.stat(Stage::Committer, replica, |s| ReplicaStats::get(&s.held)) == 0 && Instant::now() < until {
            self.clients.run_for(Duration::from_millis(20));
        }
        let held = self.stat(Stage::Committer, replica, |s| ReplicaStats::get(&s.held));
        assert!(held > 0, "committer {replica} came back without its records (amnesia)");
        let view = self.stat(Stage::Committer, replica, |s| ReplicaStats::get(&s.next));
        assert!(view >= view_before, "committer {replica} came back in view {view}, below {view_before}");
    }
}

fn names(failure: &ReplicaFailure, path: &Path) {
    let text = failure.to_string();
    assert!(text.contains(&path.display().to_string()), "the error does not name {}: {text}", path.display());
}

/// A write or sync of committer 1's record log fails under load: it stops participating, and
/// nothing it had not made durable left (the history stays linearizable with its peers
/// deciding). Repaired and restarted, it replays its log.
fn a_failing_log(op: Op, action: Action) {
    let mut run = start("");
    run.clients.run_for(Duration::from_millis(200));
    run.disk.arm(Failpoint::new("committer-1/records.log", op, 20, action));
    let failure = run.failure(Stage::Committer, 1);
    assert!(!failure.at_start && failure.error.problem == Problem::WriteFailed, "{failure}");
    names(&failure, &run.dir("committer-1/records.log"));
    assert!(run.cluster.control().stats(Stage::Committer, 1).unwrap().is_down(), "it goes on after a failed write");
    run.clients.run_for(Duration::from_millis(300));
    run.disk.disarm();
    run.restart_committer(1);
    run.finish();
}

#[test]
fn a_failed_write_stops_the_committer_and_loses_nothing() {
    within(120, || a_failing_log(Op::Write, Action::Fail));
}

#[test]
fn a_failed_sync_stops_the_committer_and_loses_nothing() {
    within(120, || a_failing_log(Op::Sync, Action::Fail));
}

/// A torn write leaves half an entry at the end of the log: on restart it is cut back to the
/// last whole entry, and the committer resumes with everything it acknowledged.
#[test]
fn a_torn_write_is_cut_back_on_restart() {
    within(120, || a_failing_log(Op::Write, Action::Tear));
}

/// Damage at rest: committer 1 is down while its log is damaged (a flipped bit in the middle,
/// the file deleted, the directory unreadable). It refuses to start, says which file and what
/// to do, and the other committers go on serving.
fn a_damaged_log(damage: impl FnOnce(&Run, &Path), problem: Problem) {
    let mut run = start("");
    run.clients.run_for(Duration::from_millis(300));
    run.crash(Stage::Committer, 1);
    let log = run.dir("committer-1/records.log");
    damage(&run, &log);
    run.cluster.control().restart(Stage::Committer, 1).unwrap();
    let failure = run.failure(Stage::Committer, 1);
    assert!(failure.at_start && failure.error.problem == problem, "{failure}");
    names(&failure, &log);
    assert!(failure.to_string().contains("do not delete it"), "no advice for the operator: {failure}");
    run.clients.run_for(Duration::from_millis(300));
    run.finish();
}

#[test]
fn a_flipped_bit_in_the_log_refuses_to_start() {
    within(120, || {
        let flip = |_: &Run, log: &Path| {
            let mut bytes = std::fs::read(log).unwrap();
            // The middle of the entries, not of the file: most of the file is the zero space
            // kept ahead, and a bit flipped just past the last entry is a torn tail.
            let written = bytes.iter().rposition(|b| *b != 0).expect("the log holds entries");
            let middle = written / 2;
            bytes[middle] ^= 0x20;
            std::fs::write(log, bytes).unwrap();
        };
        a_damaged_log(flip, Problem::Damaged);
    });
}

#[test]
fn a_deleted_log_refuses_to_start() {
    within(120, || a_damaged_log(|_, log| std::fs::remove_file(log).unwrap(), Problem::Missing));
}

#[test]
fn an_unreadable_directory_refuses_to_start() {
    within(120, || {
        let unreadable =
            |run: &Run, _: &Path| run.disk.arm(Failpoint::new("committer-1/", Op::Read, 0, Action::FailForever));
        a_damaged_log(unreadable, Problem::Unreadable);
    });
}

/// An executor whose checkpoint write fails stops (its checkpoint is never announced); the
/// others go on, and once repaired it catches up.
#[test]
fn a_failed_checkpoint_write_stops_the_executor() {
    within(120, || {
        let mut run = start("window = 64\ncheckpoint_interval = 32");
        run.disk.arm(Failpoint::new("executor-2/checkpoint-", Op::Write, 2, Action::Fail));
        let failure = run.failure(Stage::Executor, 2);
        assert!(failure.error.path.starts_with(run.dir("executor-2")), "{failure}");
        let announced = run.stat(Stage::Executor, 2, |s| ReplicaStats::get(&s.stored));
        run.clients.run_for(Duration::from_millis(300));
        assert_eq!(
            run.stat(Stage::Executor, 2, |s| ReplicaStats::get(&s.stored)),
            announced,
            "a down replica announced"
        );
        run.disk.disarm();
        run.cluster.control().restart(Stage::Executor, 2).unwrap();
        run.finish();
    });
}

/// Checkpoint writes are off the commit path (Section III-D: only the announcement waits for
/// the store): while every executor's checkpoint writes take 400 ms each, commits still leave
/// and commands complete. Stability, and so the window, follows the newest checkpoint written,
/// because a checkpoint queued behind a newer one is not written at all: executors get far
/// beyond what one write per checkpoint interval would let them reach.
#[test]
fn slow_checkpoint_writes_do_not_stall_commits() {
    within(120, || {
        let mut run = start("window = 128\ncheckpoint_interval = 16");
        run.disk.arm(Failpoint::new("/checkpoint-", Op::Write, 0, Action::DelayForever(400)));
        let slowest =
            |run: &Run, get: fn(&ReplicaStats) -> u64| (0..3).map(|e| run.stat(Stage::Executor, e, get)).min();
        // One write per interval would allow at most 16 sequence numbers of stability per
        // 400 ms, and the executors at most a window above that: run until they are beyond
        // it (a loaded machine only takes longer), for at most a minute.
        let started = Instant::now();
        let serial_bound = |started: Instant| 16 * (started.elapsed().as_millis() as u64 / 400 + 1) + 128;
        let beyond =
            |run: &Run| slowest(run, |s| ReplicaStats::get(&s.next)).unwrap_or(0) > serial_bound(started) + 128;
        while !beyond(&run) && started.elapsed() < Duration::from_secs(60) {
            run.clients.run_for(Duration::from_millis(200));
        }
        let (next, stored) =
            (slowest(&run, |s| ReplicaStats::get(&s.next)), slowest(&run, |s| ReplicaStats::get(&s.stored)));
        assert!(
            beyond(&run),
            "executors reached {next:?} (stored {stored:?}); serial writes allow {}",
            serial_bound(started)
        );
        run.disk.disarm();
        run.finish();
    });
}

/// Two proposers on one worker: the led-view write of one fails when a view change makes it the
/// leader. Only that proposer stops; the other one leads the next view, on the same worker.
/// (With one durable flag per worker, one failed write silenced both.)
#[test]
fn one_proposers_failed_write_does_not_silence_its_neighbour() {
    within(120, || {
        let mut run = start_with("", |d| d.placement.proposers = Some(vec![0, 0]));
        run.clients.run_for(Duration::from_millis(200));
        run.disk.arm(Failpoint::new("proposer-1/led-view", Op::Write, 0, Action::Fail));
        run.cluster.control().crash(Stage::Proposer, 0).unwrap();
        let failure = run.failure(Stage::Proposer, 1);
        names(&failure, &run.dir("proposer-1/led-view"));
        run.cluster.control().restart(Stage::Proposer, 0).unwrap();
        let before = run.clients.completed();
        run.clients.run_for(Duration::from_millis(1_500));
        assert!(run.clients.completed() > before + 20, "the service did not resume under proposer 0");
        assert!(run.stat(Stage::Executor, 0, |s| ReplicaStats::get(&s.view)) >= 2, "proposer 0 leads view 2");
        run.finish();
    });
}

/// A restarted executor waits until its previous incarnation's writes are on disk, then resumes
/// from the newest: it never announces a checkpoint it does not hold. (Before, a write still in
/// flight finished after the restart and was announced although the new incarnation had
/// restored an older one.)
#[test]
fn a_restarted_executor_announces_only_what_it_holds() {
    within(120, || {
        let mut run = start("window = 64\ncheckpoint_interval = 16\nbatch_size = 1");
        run.disk.arm(Failpoint::new("executor-0/checkpoint-", Op::Write, 0, Action::DelayForever(150)));
        run.clients.run_for(Duration::from_millis(300));
        assert!(run.cluster.quiesce(Duration::from_secs(30)));
        run.cluster.control().restart(Stage::Executor, 0).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            let (stored, next) = (
                run.stat(Stage::Executor, 0, |s| ReplicaStats::get(&s.stored)),
                run.stat(Stage::Executor, 0, |s| ReplicaStats::get(&s.next)),
            );
            assert!(stored <= next, "executor 0 announced checkpoint {stored} but is at {next}");
            std::thread::sleep(Duration::from_millis(5));
        }
        run.disk.disarm();
        run.finish();
    });
}

/// A damaged incarnation file: the source refuses to start (it used to panic, which with
/// `panic = "abort"` took the process down and made the supervisor restart it forever); the
/// other source serves.
#[test]
fn a_damaged_incarnation_file_refuses_to_start() {
    within(120, || {
        let mut run = start("retry_timeout_ms = 200");
        run.clients.run_for(Duration::from_millis(200));
        run.crash(Stage::Source, 0);
        let file = run.dir("source-0/incarnation");
        std::fs::write(&file, "garbage").unwrap();
        run.cluster.control().restart(Stage::Source, 0).unwrap();
        let failure = run.failure(Stage::Source, 0);
        assert!(failure.at_start && failure.error.problem == Problem::Damaged, "{failure}");
        names(&failure, &file);
        run.finish();
    });
}
