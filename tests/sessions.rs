//! Client sessions that expire through consensus: the executor state machine driven directly.
//!
//! Sessions end by log position (a session ends `session_timeout` execution slots after its
//! latest command), so every replica that executes the same log ends the same sessions at the
//! same slot; these tests observe that through the executors' session counters. The last test
//! runs `tara client create --ephemeral` against a multi-process cluster on 127.0.0.1.

mod common;
#[path = "common/procs.rs"]
mod procs;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::within;
use procs::LocalCluster;
use tara::app::coordination::{CoordResponse, decode_result};
use tara::client::Client;
use tara::cluster::Cluster;
use tara::dataflow::Stage;

use tara::app::Application;
use tara::app::coordination::{CoordOp, Coordination};
use tara::app::kv::{KvOp, KvStore};
use tara::protocol::{Command, Commit, Executor, Outbox, Outcome, Params, Request};

const TIMEOUT: u64 = 1024;

fn params() -> Params {
    let params = Params { session_timeout: TIMEOUT, max_sessions: 4096, checkpoint_interval: 128, ..Params::default() };
    params.validate().unwrap();
    params
}

fn put(client: u64, timestamp: u64, answered_below: u64) -> Command {
    let op = KvOp::Put { key: format!("k{}", client % 16), value: b"v".to_vec() }.encode();
    Command { answered_below, ..Command::new(client, timestamp, op) }
}

/// Commits `commands` at `sequence` on every executor (f+1 = 2 committers vote).
fn order<A: Application>(executors: &mut [Executor<A>], sequence: u64, commands: Vec<Command>, out: &mut Outbox) {
    let request = Request { source: 0, number: sequence + 1, commands: Arc::from(commands) };
    for executor in executors.iter_mut() {
        for committer in 0..2 {
            executor.on_commit(Commit { committer, sequence, view: 0, request: request.clone() }, out);
        }
        assert_eq!(executor.next(), sequence + 1, "slot {sequence} executed");
    }
}

fn executors(n: u32) -> Vec<Executor<KvStore>> {
    (0..n).map(|id| Executor::new(id, &params(), KvStore::default())).collect()
}

/// 100,000 clients that each send one command and go away leave at most a timeout's worth of
/// sessions in the table (and never more than `max_sessions`), at every replica alike.
#[test]
fn a_hundred_thousand_short_lived_clients_leave_the_table_bounded() {
    let mut group = executors(3);
    let mut out = Outbox::default();
    let mut most = 0;
    for client in 0..100_000u64 {
        order(&mut group, client, vec![put(client + 1, 1, 1)], &mut out);
        out.replies.clear();
        most = most.max(group[0].sessions());
    }
    assert!(most <= TIMEOUT as usize, "the table held {most} sessions, more than a timeout's worth");
    for executor in &group {
        assert_eq!(executor.sessions(), TIMEOUT as usize);
        assert_eq!(executor.sessions_ended(), 100_000 - TIMEOUT);
        assert_eq!(executor.state_digest(), group[0].state_digest(), "replicas expire alike");
    }
    assert!(group[0].held() <= TIMEOUT as usize + 256, "cached results leave with their sessions");
}

/// A full table ends the least recently active session; the bound holds whatever the timeout.
#[test]
fn max_sessions_bounds_the_table() {
    let params = Params { max_sessions: 100, session_timeout: 1 << 20, ..params() };
    let mut executor = Executor::new(0, &params, KvStore::default());
    let mut out = Outbox::default();
    for client in 0..10_000u64 {
        order(std::slice::from_mut(&mut executor), client, vec![put(client + 1, 1, 1)], &mut out);
        assert!(executor.sessions() <= 100);
    }
    assert_eq!(executor.sessions_ended(), 10_000 - 100);
}

/// Within a live session a retransmitted duplicate is answered from the cache, not executed
/// again; keep-alives keep the session alive; once it ended, a command that claims answers from
/// it gets "session expired", not a second execution.
#[test]
fn exactly_once_within_a_session_and_a_clear_refusal_after_it() {
    let mut group = executors(3);
    let mut out = Outbox::default();
    let client = 7;
    order(&mut group, 0, vec![put(client, 1, 1)], &mut out);
    let mut sequence = 1;
    // Idle for three timeouts of other traffic, but sending keep-alives.
    for round in 0..3 * TIMEOUT {
        let mut commands = vec![put(1_000 + round, 1, 1)];
        if round % (TIMEOUT / 2) == 0 {
            let timestamp = 2 + round / (TIMEOUT / 2);
            commands.push(Command::keep_alive(client, timestamp, timestamp));
        }
        order(&mut group, sequence, commands, &mut out);
        sequence += 1;
    }
    assert!(group.iter().all(|e| e.has_session(client)), "keep-alives kept the session");
    out.replies.clear();
    for _ in 0..2 {
        order(&mut group, sequence, vec![put(client, 50, 50)], &mut out);
        sequence += 1;
    }
    let outcomes: Vec<Outcome> = out.replies.iter().map(|r| r.outcome).collect();
    let expected = [[Outcome::Executed; 3], [Outcome::Cached; 3]].concat();
    assert_eq!(outcomes, expected, "a retransmitted duplicate is not executed again");
    let executed = group[0].executed();
    for _ in 0..TIMEOUT {
        order(&mut group, sequence, vec![], &mut out);
        sequence += 1;
    }
    assert!(group.iter().all(|e| !e.has_session(client)), "silent for a timeout: ended at every replica");
    out.replies.clear();
    order(&mut group, sequence, vec![put(client, 9, 9)], &mut out);
    let outcomes: Vec<Outcome> = out.replies.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, vec![Outcome::SessionExpired; 3]);
    assert_eq!(group[0].executed(), executed, "nothing executed for an ended session");
    assert!(!group[0].has_session(client), "a refused command opens no session");
}

fn coordination(n: u32) -> Vec<Executor<Coordination>> {
    (0..n).map(|id| Executor::new(id, &params(), Coordination::default())).collect()
}

/// A sequential create: each execution adds a znode, so a second execution shows.
fn create_sequential(client: u64, timestamp: u64, answered_below: u64) -> Command {
    let op = CoordOp::Create { path: "/n-".into(), data: vec![], sequential: true }.encode();
    Command { answered_below, ..Command::new(client, timestamp, op) }
}

/// Lets a whole session timeout of slots pass with no command of any client.
fn silence<A: Application>(group: &mut [Executor<A>], sequence: &mut u64, out: &mut Outbox) {
    for _ in 0..TIMEOUT {
        order(group, *sequence, vec![], out);
        *sequence += 1;
    }
}

/// The gap across expiry: a client opened its session, its commands 2..=8 executed, and every
/// answer was lost. Silent for a whole timeout, it retransmits them, claiming no answers beyond
/// the opener's, or none at all: each is refused with "session expired" at every replica and
/// none executes a second time (the old rule, which let any command that claims no answers
/// open a session, executed them all again).
#[test]
fn commands_retransmitted_after_their_session_ended_are_refused_and_never_run_twice() {
    let mut group = coordination(3);
    let mut out = Outbox::default();
    order(&mut group, 0, vec![Command::open(7)], &mut out);
    let creates: Vec<Command> = (2..=8).map(|t| create_sequential(7, t, 2)).collect();
    order(&mut group, 1, creates.clone(), &mut out);
    let (nodes, executed) = (group[0].app().len(), group[0].executed());
    assert_eq!(nodes, 1 + 7, "the root and seven sequential znodes");
    out.replies.clear(); // every answer is lost
    let mut sequence = 2;
    silence(&mut group, &mut sequence, &mut out);
    assert!(group.iter().all(|e| !e.has_session(7)), "silent for a timeout: ended everywhere");
    for answered_below in [1, 0, 2] {
        let again: Vec<Command> = creates.iter().map(|c| Command { answered_below, ..c.clone() }).collect();
        order(&mut group, sequence, again, &mut out);
        sequence += 1;
    }
    assert_eq!(out.replies.len(), 3 * 3 * 7);
    assert!(out.replies.iter().all(|r| r.outcome == Outcome::SessionExpired), "every retransmission is refused");
    for executor in &group {
        assert_eq!((executor.app().len(), executor.executed()), (nodes, executed), "nothing ran twice");
        assert!(!executor.has_session(7), "a refused command opens no session");
        assert_eq!(executor.state_digest(), group[0].state_digest());
    }
}

/// The opener's answer was lost and its session ended before the client heard of it: the
/// retransmitted opener opens a new session, executing a keep-alive again changes nothing, and
/// the client's commands, sent once it is answered, run once in the new session.
#[test]
fn a_lost_opener_retransmitted_after_its_session_ended_is_harmless() {
    let mut group = coordination(3);
    let mut out = Outbox::default();
    order(&mut group, 0, vec![Command::open(7)], &mut out);
    out.replies.clear(); // the opener's answer is lost
    let mut sequence = 1;
    silence(&mut group, &mut sequence, &mut out);
    assert!(group.iter().all(|e| !e.has_session(7)));
    let nodes = group[0].app().len();
    order(&mut group, sequence, vec![Command::open(7)], &mut out);
    sequence += 1;
    assert!(out.replies.iter().all(|r| r.outcome == Outcome::Executed), "the opener opens a new session");
    assert!(group.iter().all(|e| e.has_session(7) && e.app().len() == nodes), "and changes nothing else");
    out.replies.clear();
    for _ in 0..2 {
        order(&mut group, sequence, vec![create_sequential(7, 2, 2)], &mut out);
        sequence += 1;
    }
    let outcomes: Vec<Outcome> = out.replies.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [[Outcome::Executed; 3], [Outcome::Cached; 3]].concat());
    assert!(group.iter().all(|e| e.app().len() == nodes + 1), "the command ran once");
}

/// The library's client over an embedded cluster: once its session ended (silent while other
/// clients' traffic filled more than a timeout of slots), its outstanding commands fail with
/// "session expired" and an unknown outcome, and the client takes no more commands; a new
/// client opens a new session and is served.
#[test]
fn the_client_library_fails_commands_of_an_ended_session_as_of_unknown_outcome() {
    within(120, || {
        let description =
            tara::cluster::Description { session_timeout: TIMEOUT, ..tara::cluster::Description::embedded() };
        let cluster = Cluster::start(&description, |_| KvStore::default()).expect("starts");
        let put = |key: &str| KvOp::Put { key: key.into(), value: b"v".to_vec() }.encode();
        let mut silent = cluster.client();
        silent.invoke(put("silent")).expect("served while its session lives");
        let mut busy = cluster.client();
        // Each closed-loop command takes a slot of its own at least.
        for i in 0..TIMEOUT + 64 {
            busy.invoke(KvOp::Get { key: format!("k{}", i % 8) }.encode()).expect("served");
        }
        let tickets: Vec<u64> = (0..3).map(|i| silent.submit(put(&format!("late{i}"))).expect("taken")).collect();
        for ticket in tickets {
            let done = silent.wait(ticket).expect("an answer");
            assert_eq!(done.outcome, Outcome::SessionExpired, "t{ticket}");
        }
        let error = silent.invoke(put("again")).expect_err("an ended session takes no more commands");
        assert_eq!(error, tara::client::ClientError::SessionExpired);
        assert!(error.to_string().contains("unknown"), "{error}");
        let mut fresh = cluster.client();
        fresh.invoke(put("fresh")).expect("a new client opens a new session");
        assert!(cluster.stop().digests_agree());
    });
}

/// A replica restored from a checkpoint holds the same sessions and ends the same ones at the
/// same slot as one that executed everything.
#[test]
fn a_checkpoint_round_trip_keeps_sessions() {
    let mut group = executors(1);
    let mut out = Outbox::default();
    let mut sequence = 0;
    while sequence < 3 * 128 {
        order(&mut group, sequence, vec![put(sequence % 700 + 1, sequence / 700 + 1, 1)], &mut out);
        sequence += 1;
    }
    let (at, state) = group[0].newest_checkpoint().expect("checkpoints every 128 slots");
    assert_eq!(at, 3 * 128);
    let mut restored = Executor::new(1, &params(), KvStore::default());
    restored.restore_checkpoint(at, state).unwrap();
    assert_eq!(restored.sessions(), group[0].sessions());
    assert_eq!(restored.state_digest(), group[0].state_digest());
    let mut both = vec![group.pop().unwrap(), restored];
    for _ in 0..2 * TIMEOUT {
        order(&mut both, sequence, vec![], &mut out);
        sequence += 1;
        assert_eq!(both[0].sessions(), both[1].sessions(), "slot {sequence}");
    }
    assert_eq!(both[1].sessions(), 0);
    assert_eq!(both[0].sessions_ended(), both[1].sessions_ended());
    assert_eq!(both[0].state_digest(), both[1].state_digest());
}

/// An ephemeral znode disappears at every replica at the same slot once its session ends;
/// a persistent one stays, and the trees stay equal.
#[test]
fn an_ephemeral_znode_goes_with_its_session_at_every_replica() {
    let mut group: Vec<Executor<Coordination>> =
        (0..3).map(|id| Executor::new(id, &params(), Coordination::default())).collect();
    let mut out = Outbox::default();
    let op = |path: &str, ephemeral: bool| {
        let (path, data) = (path.to_string(), b"holder".to_vec());
        let op = if ephemeral {
            CoordOp::CreateEphemeral { path, data, sequential: false }
        } else {
            CoordOp::Create { path, data, sequential: false }
        };
        op.encode()
    };
    order(
        &mut group,
        0,
        vec![Command::new(5, 1, op("/leader", true)), Command::new(6, 1, op("/config", false))],
        &mut out,
    );
    assert!(group.iter().all(|e| e.app().len() == 3), "both created everywhere");
    let mut sequence = 1;
    while group[0].has_session(5) {
        order(&mut group, sequence, vec![], &mut out);
        sequence += 1;
        let lens: Vec<usize> = group.iter().map(|e| e.app().len()).collect();
        assert!(lens.iter().all(|l| *l == lens[0]), "slot {sequence}: replicas differ {lens:?}");
    }
    assert_eq!(sequence, TIMEOUT + 1, "ends exactly a timeout after its latest command");
    for executor in &group {
        assert_eq!(executor.app().len(), 2, "the ephemeral node is gone, the persistent one stays");
        assert_eq!(executor.app().ephemeral().count(), 0);
        assert_eq!(executor.state_digest(), group[0].state_digest());
    }
}

/// An ephemeral znode whose session sends keep-alives survives many timeouts of other traffic,
/// at every replica, and goes a timeout after its holder falls silent.
#[test]
fn an_ephemeral_znode_survives_while_its_session_is_kept_alive() {
    let mut group: Vec<Executor<Coordination>> =
        (0..3).map(|id| Executor::new(id, &params(), Coordination::default())).collect();
    let mut out = Outbox::default();
    let lock = CoordOp::CreateEphemeral { path: "/lock".into(), data: vec![], sequential: false }.encode();
    order(&mut group, 0, vec![Command::new(5, 1, lock)], &mut out);
    let mut sequence = 1;
    let mut timestamp = 2;
    for round in 0..4 * TIMEOUT {
        let other = CoordOp::Exists { path: "/lock".into() }.encode();
        let mut commands = vec![Command::new(1_000 + round, 1, other)];
        if round % (TIMEOUT / 4) == 0 {
            commands.push(Command::keep_alive(5, timestamp, timestamp));
            timestamp += 1;
        }
        order(&mut group, sequence, commands, &mut out);
        sequence += 1;
    }
    for executor in &group {
        assert!(executor.has_session(5) && executor.app().contains("/lock"), "kept alive, kept");
        assert!(executor.sessions() <= TIMEOUT as usize + 1, "the one-shot clients still expire");
    }
    let silent_from = sequence;
    while group.iter().any(|e| e.app().contains("/lock")) {
        order(&mut group, sequence, vec![], &mut out);
        sequence += 1;
        let held: Vec<bool> = group.iter().map(|e| e.app().contains("/lock")).collect();
        assert!(held.iter().all(|h| *h == held[0]), "slot {sequence}: replicas differ {held:?}");
    }
    let last_keep_alive = silent_from - 1 - (4 * TIMEOUT - 1) % (TIMEOUT / 4);
    assert_eq!(sequence, last_keep_alive + TIMEOUT + 1, "gone exactly a timeout after the last keep-alive");
}

/// A replica restored from a checkpoint holds the same ephemeral znodes with the same owners,
/// and deletes them at the same slot as one that executed everything.
#[test]
fn a_checkpoint_round_trip_keeps_ephemeral_znodes_consistent() {
    let mut original = vec![Executor::new(0, &params(), Coordination::default())];
    let mut out = Outbox::default();
    let ephemeral = |path: String| CoordOp::CreateEphemeral { path, data: vec![], sequential: false }.encode();
    let mut sequence = 0;
    while sequence < 2 * 128 {
        // Clients 1..=100 each hold one ephemeral node, created at slots 0..100.
        let commands = if sequence < 100 {
            vec![Command::new(sequence + 1, 1, ephemeral(format!("/e{sequence}")))]
        } else {
            vec![]
        };
        order(&mut original, sequence, commands, &mut out);
        sequence += 1;
    }
    let (at, state) = original[0].newest_checkpoint().expect("checkpoints every 128 slots");
    assert_eq!(at, 2 * 128);
    let mut restored = Executor::new(1, &params(), Coordination::default());
    restored.restore_checkpoint(at, state).unwrap();
    assert_eq!(restored.app(), original[0].app(), "same znodes, same owners");
    assert_eq!(restored.app().ephemeral().count(), 100);
    let mut both = vec![original.pop().unwrap(), restored];
    for _ in 0..TIMEOUT {
        order(&mut both, sequence, vec![], &mut out);
        sequence += 1;
        assert_eq!(both[0].app(), both[1].app(), "slot {sequence}");
    }
    for executor in &both {
        assert_eq!(executor.app().ephemeral().count(), 0, "every owner's session ended");
        assert_eq!(executor.app().len(), 1, "only the root is left");
    }
    assert_eq!(both[0].state_digest(), both[1].state_digest());
}

/// A `tara client create --ephemeral` process, killed if the test fails.
struct Holder {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Holder {
    fn start(connect: &str, path: &str) -> Holder {
        let args = ["client", "--connect", connect, "--timeout-ms", "20000", "create", "--ephemeral", path, "held"];
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tara"))
            .args(args)
            .args(["--keep-alive-ms", "20"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("tara client starts");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Holder { child, stdout }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("the holder's output");
        line
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().expect("the holder's status") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the holder did not exit within 30 s");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn exists(client: &mut Client, path: &str) -> bool {
    let bytes = client.invoke(CoordOp::Exists { path: path.into() }.encode()).expect("the cluster answers");
    match decode_result(&bytes).expect("a coordination result") {
        Ok(CoordResponse::Exists(stat)) => stat.is_some(),
        other => panic!("exists answered {other:?}"),
    }
}

/// `tara client create --ephemeral` holds its znode while it runs, through several session
/// timeouts of other traffic; Ctrl-C deletes it at once; after kill -9 it goes when the
/// session expires, a timeout's worth of execution slots later. Each command of the one
/// sequential client below takes an execution slot of its own, so the kill -9'd holder's znode
/// must be gone within a timeout's worth of those commands (plus the keep-alive in flight).
#[test]
fn tara_client_create_ephemeral_holds_the_znode_while_it_runs() {
    within(300, || {
        let cluster = LocalCluster::start(&format!("session_timeout = {TIMEOUT}"));
        let connect = cluster.sources.join(",");
        let mut interrupted = Holder::start(&connect, "/interrupted");
        let mut killed = Holder::start(&connect, "/killed");
        assert_eq!(interrupted.line(), "created /interrupted\n");
        assert_eq!(killed.line(), "created /killed\n");
        let mut client = Client::new(cluster.pool());
        client.set_deadline(Duration::from_secs(30));
        for round in 0..3 * TIMEOUT {
            assert!(exists(&mut client, "/interrupted") && exists(&mut client, "/killed"), "round {round}: kept alive");
        }
        interrupted.signal("-INT");
        assert!(interrupted.wait().success(), "Ctrl-C ends the holder cleanly");
        assert_eq!(interrupted.line(), "deleted /interrupted\n");
        assert!(!exists(&mut client, "/interrupted"), "Ctrl-C deleted it at once");
        killed.signal("-KILL");
        killed.wait();
        assert!(exists(&mut client, "/killed"), "kill -9: the session lives on until it expires");
        let mut commands = 1;
        while exists(&mut client, "/killed") {
            commands += 1;
            assert!(commands <= TIMEOUT + 64, "still there after {commands} slots of traffic");
        }
        eprintln!("the kill -9'd holder's znode went after {commands} sequential commands");
    });
}

/// End to end on an embedded cluster: 3,000 one-shot clients (each command its own execution
/// slot) leave at most `max_sessions` sessions at every executor, as their published counter
/// shows, and the executors agree.
#[test]
fn one_shot_clients_of_an_embedded_cluster_leave_the_table_bounded() {
    within(240, || {
        let description = common::description("session_timeout = 1024\nmax_sessions = 512");
        let cluster = Cluster::start(&description, |_| Coordination::default()).expect("the cluster starts");
        let sessions = |executor| common::stat(&cluster, Stage::Executor, executor, |s| &s.sessions);
        let mut most = 0;
        for i in 0..3_000 {
            let mut client = cluster.client();
            client.invoke(CoordOp::Exists { path: format!("/{i}") }.encode()).expect("an answer");
            most = most.max((0..3).map(sessions).max().unwrap_or(0));
        }
        assert!(most <= 512, "an executor held {most} sessions");
        let full = common::wait_until(Duration::from_secs(60), || (0..3).all(|e| sessions(e) == 512));
        assert!(full, "every executor ends at max_sessions: {:?}", (0..3).map(sessions).collect::<Vec<_>>());
        assert!(cluster.stop().digests_agree());
    });
}
