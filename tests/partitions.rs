//! Partitioned consensus (paper Section IV) on the embedded cluster: P ordering groups, one
//! merged execution order, idle partitions filled, view changes confined to one partition.

mod common;

use std::time::{Duration, Instant};

use common::{description, positions_agree, stat, within};
use tara::app::coordination::{CoordOp, Coordination};
use tara::app::kv::{KvOp, KvStore};
use tara::client::{ClientError, ClientPool};
use tara::cluster::{Cluster, Options};
use tara::dataflow::{ReplicaStats, Stage};
use tara::protocol::topology;

/// The sum of a counter over the replicas of `stage` in `partition`.
fn partition_sum(
    cluster: &Cluster,
    stage: Stage,
    partition: u32,
    get: impl Fn(&ReplicaStats) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    let replicas = topology::receivers(stage, Some(partition), cluster.params());
    replicas.map(|r| stat(cluster, stage, r, &get)).sum()
}

/// `count` clients whose ids all fall into one of `partitions` (client `c` is ordered by
/// partition `c mod P`).
fn clients_in(pool: &mut ClientPool, count: usize, partitions: &[u32], p: usize) -> Vec<u64> {
    let mut clients = Vec::new();
    while clients.len() < count {
        let client = pool.add_client();
        if partitions.contains(&((client % p as u64) as u32)) {
            clients.push(client);
        }
    }
    clients
}

/// Closed loop: each client keeps `depth` commands outstanding until `total` completed.
/// Returns false if completions stopped coming for 20 s. A client whose window of timestamps
/// is full (one of its commands waits for a retransmission while the others ran ahead) submits
/// its next command when that one completes.
fn closed_loop(
    pool: &mut ClientPool,
    clients: &[u64],
    depth: usize,
    total: usize,
    op: impl Fn(u64, usize) -> Vec<u8>,
) -> bool {
    let (mut submitted, mut completed) = (0, 0);
    let mut ready: Vec<u64> = clients.iter().flat_map(|c| std::iter::repeat_n(*c, depth)).collect();
    let mut last = Instant::now();
    while completed < total {
        let mut blocked = Vec::new();
        for client in ready.drain(..) {
            if submitted >= total {
                continue;
            }
            match pool.submit(client, op(client, submitted)) {
                Ok(_) => submitted += 1,
                Err(ClientError::WindowFull(_)) => blocked.push(client),
                Err(e) => panic!("client {client}: {e}"),
            }
        }
        ready = blocked;
        match pool.poll(Duration::from_millis(10)).unwrap() {
            Some(done) => {
                (completed, last) = (completed + 1, Instant::now());
                ready.push(done.client);
            }
            None if last.elapsed() > Duration::from_secs(20) => return false,
            None => {}
        }
    }
    true
}

fn put(client: u64, n: usize) -> Vec<u8> {
    KvOp::Put { key: format!("k{}", (client as usize * 7 + n) % 50), value: n.to_le_bytes().to_vec() }.encode()
}

/// P = 4, 8 clients, 50,000 commands on the coordination service: every executor executes the
/// same merged sequence and ends with the same state.
#[test]
fn four_partitions_execute_one_merged_sequence() {
    within(240, || {
        let (executed_tx, executed) = crossbeam_channel::unbounded();
        let d = description("partitions = 4\ndurable_records = false\nbatch_size = 8");
        let options = Options { executed: Some(executed_tx), ..Options::default() };
        let cluster = Cluster::start_with(&d, |_| Coordination::default(), options).unwrap();
        let mut pool = cluster.pool();
        let clients = clients_in(&mut pool, 8, &[0, 1, 2, 3], 4);
        let op = |client: u64, n: usize| {
            let path = format!("/c{client}-{}", n % 64);
            if n.is_multiple_of(2) {
                CoordOp::Create { path, data: vec![1; 16], sequential: false }.encode()
            } else {
                CoordOp::SetData { path, data: n.to_le_bytes().to_vec(), version: None }.encode()
            }
        };
        assert!(closed_loop(&mut pool, &clients, 8, 50_000, op), "the workload stalled");
        assert!(cluster.quiesce(Duration::from_secs(30)));
        for partition in 0..4 {
            let accepted = partition_sum(&cluster, Stage::Committer, partition, |s| &s.count);
            assert!(accepted > 0, "partition {partition} ordered nothing");
        }
        let window = cluster.params().window;
        for executor in 0..3 {
            let lag = stat(&cluster, Stage::Executor, executor, |s| &s.lag_max);
            // Each partition runs at most a window of its own slots ahead of the threshold, which
            // the slowest partition holds: at most (window + 1) * P execution slots.
            assert!(lag <= (window + 1) * 4, "executor {executor}: {lag} slots committed beyond a gap");
            eprintln!("executor {executor}: at most {lag} execution slots committed beyond a gap");
        }
        let proposed: u64 = (0..4).map(|p| partition_sum(&cluster, Stage::Proposer, p, |s| &s.count)).sum();
        let filled: u64 = (0..4).map(|p| partition_sum(&cluster, Stage::Proposer, p, |s| &s.filled)).sum();
        eprintln!("{proposed} proposals, {filled} of them no-op fills");
        let positions = positions_agree(&executed).unwrap();
        assert!(positions >= 50_000, "only {positions} positions executed");
        assert!(cluster.stop().digests_agree());
    });
}

/// Skewed load: every client in partition 0, partitions 1 to 3 idle. Every command completes,
/// because executors ask the idle partitions to fill the slots the merge waits for.
#[test]
fn an_idle_partition_never_stalls_the_merge() {
    within(180, || {
        let d = description("partitions = 4\ndurable_records = false\nbatch_size = 4");
        let cluster = Cluster::start(&d, |_| KvStore::default()).unwrap();
        let mut pool = cluster.pool();
        let clients = clients_in(&mut pool, 8, &[0], 4);
        assert!(closed_loop(&mut pool, &clients, 4, 5_000, put), "the merge stalled on an idle partition");
        for idle in 1..4 {
            let filled = partition_sum(&cluster, Stage::Proposer, idle, |s| &s.filled);
            assert!(filled > 0, "partition {idle} filled nothing");
        }
        let asked: u64 = (0..3).map(|e| stat(&cluster, Stage::Executor, e, |s| &s.filled)).sum();
        assert!(asked > 0, "no executor asked for a fill");
        for partition in 0..4 {
            assert_eq!(partition_sum(&cluster, Stage::Controller, partition, |s| &s.count), 0, "a view change");
        }
        assert!(cluster.quiesce(Duration::from_secs(30)));
        assert!(cluster.stop().digests_agree());
    });
}

/// A proposer crash in partition 1: partition 0 keeps agreeing (its committers keep accepting)
/// and never changes its view; partition 1 changes its view, and the merge resumes.
#[test]
fn a_proposer_crash_in_one_partition_does_not_stop_the_others() {
    within(180, || {
        let d = description("partitions = 2\ndurable_records = false\nbatch_size = 4\nview_timeout_ms = 300");
        let cluster = Cluster::start(&d, |_| KvStore::default()).unwrap();
        let params = cluster.params().clone();
        let mut pool = cluster.pool();
        let clients = clients_in(&mut pool, 8, &[0, 1], 2);
        assert!(closed_loop(&mut pool, &clients, 2, 1_000, put));
        let leader = topology::global(Stage::Proposer, 1, 0, &params);
        cluster.control().crash(Stage::Proposer, leader).unwrap();
        let accepted_before = partition_sum(&cluster, Stage::Committer, 0, |s| &s.count);
        let started = Instant::now();
        assert!(closed_loop(&mut pool, &clients, 2, 2_000, put), "the service did not resume");
        let accepted_after = partition_sum(&cluster, Stage::Committer, 0, |s| &s.count);
        assert!(accepted_after > accepted_before, "partition 0 stopped agreeing");
        let views_1: Vec<u64> = topology::receivers(Stage::Controller, Some(1), &params)
            .map(|c| stat(&cluster, Stage::Controller, c, |s| &s.view))
            .collect();
        assert!(views_1.iter().filter(|v| **v >= 1).count() >= 2, "partition 1 did not change its view: {views_1:?}");
        let changes_0 = partition_sum(&cluster, Stage::Controller, 0, |s| &s.count);
        assert_eq!(changes_0, 0, "partition 0 changed its view although it made progress");
        assert!(started.elapsed() < Duration::from_secs(60));
        cluster.control().restart(Stage::Proposer, leader).unwrap();
        assert!(cluster.quiesce(Duration::from_secs(30)));
        assert!(cluster.stop().digests_agree());
    });
}

/// The proposer of an idle partition crashes: nobody fills the slots the merge waits for, so
/// that partition's controllers change its view, and the new proposer fills them.
#[test]
fn an_idle_partition_whose_proposer_crashed_is_taken_over() {
    within(180, || {
        let d = description("partitions = 2\ndurable_records = false\nbatch_size = 4\nview_timeout_ms = 300");
        let cluster = Cluster::start(&d, |_| KvStore::default()).unwrap();
        let params = cluster.params().clone();
        let mut pool = cluster.pool();
        let clients = clients_in(&mut pool, 4, &[0], 2);
        assert!(closed_loop(&mut pool, &clients, 2, 500, put));
        let leader = topology::global(Stage::Proposer, 1, 0, &params);
        cluster.control().crash(Stage::Proposer, leader).unwrap();
        assert!(closed_loop(&mut pool, &clients, 2, 1_000, put), "the merge stalled on the crashed idle partition");
        assert!(partition_sum(&cluster, Stage::Controller, 1, |s| &s.count) >= 1, "partition 1 never changed view");
        let successor = topology::global(Stage::Proposer, 1, 1, &params);
        assert!(stat(&cluster, Stage::Proposer, successor, |s| &s.filled) > 0, "the new proposer filled nothing");
        assert!(cluster.quiesce(Duration::from_secs(30)));
        assert!(cluster.stop().digests_agree());
    });
}

/// A whole-cluster restart with durable state and two partitions: every partition recovers its
/// committers' records and views, and the service continues where it stopped.
#[test]
fn a_whole_cluster_restart_recovers_every_partition() {
    within(240, || {
        let state = tempfile::tempdir().unwrap();
        let d = description("partitions = 2\nbatch_size = 4\nview_timeout_ms = 300");
        let start = || {
            let options = Options { state_dir: Some(state.path().to_path_buf()), ..Options::default() };
            Cluster::start_with(&d, |_| KvStore::default(), options).unwrap()
        };
        let cluster = start();
        let mut pool = cluster.pool();
        let clients = clients_in(&mut pool, 4, &[0, 1], 2);
        assert!(closed_loop(&mut pool, &clients, 2, 1_000, put));
        assert!(cluster.quiesce(Duration::from_secs(30)));
        let first = cluster.stop();
        assert!(first.digests_agree());
        for committer in 0..6 {
            assert!(
                state.path().join(format!("committer-{committer}")).is_dir(),
                "committer {committer} kept no state"
            );
        }
        let cluster = start();
        let mut pool = cluster.pool();
        let clients = clients_in(&mut pool, 4, &[0, 1], 2);
        assert!(closed_loop(&mut pool, &clients, 2, 1_000, put), "a partition did not recover");
        assert!(cluster.quiesce(Duration::from_secs(30)));
        let second = cluster.stop();
        assert!(second.digests_agree());
        assert!(second.executors[0].0 > first.executors[0].0, "execution did not continue after the restart");
    });
}
