//! Garbage collection and checkpoints (Section III-D) on the embedded cluster: bounded memory,
//! state transfer for lagging executors, a full window that stalls and resumes, corrupt and
//! lost checkpoints, restarts.

mod common;

use std::time::Duration;

/// How long a test waits for an event it expects (an answer, a replica catching up): long
/// enough for a loaded machine; a healthy cluster needs a fraction of it.
const EVENT: Duration = Duration::from_secs(60);

use common::{description, stat, wait_until, within};
use tara::app::coordination::{CoordOp, CoordResponse, Coordination, decode_result};
use tara::app::kv::{KvOp, KvStore};
use tara::cluster::{Cluster, Options};
use tara::dataflow::{ReplicaStats, Stage};
use tara::storage::CheckpointStore;

/// Drives `clients` closed-loop clients until `commands` completed (puts and gets on 100 keys).
fn load(cluster: &Cluster, clients: usize, commands: u64) {
    let mut pool = cluster.pool();
    let ids: Vec<u64> = (0..clients).map(|_| pool.add_client()).collect();
    let op = |i: u64| {
        let key = format!("k{}", i % 100);
        if i.is_multiple_of(2) { KvOp::Put { key, value: i.to_le_bytes().to_vec() } } else { KvOp::Get { key } }
            .encode()
    };
    let mut issued = 0;
    for id in &ids {
        pool.submit(*id, op(issued)).unwrap();
        issued += 1;
    }
    let mut completed = 0;
    while completed < commands {
        let done = pool.poll(EVENT).unwrap().expect("the cluster answers");
        completed += 1;
        if issued < commands {
            pool.submit(done.client, op(issued)).unwrap();
            issued += 1;
        }
    }
}

/// Every replica's counters, for failure messages.
fn dump(cluster: &Cluster) -> String {
    let mut lines = Vec::new();
    for stage in Stage::ALL {
        for (r, s) in cluster.control().stage_stats(stage) {
            let g = ReplicaStats::get;
            lines.push(format!(
                "{}[{r}] next {} stable {} held {} transfers {} repairs {} stored {}",
                stage.name(),
                g(&s.next),
                g(&s.stable),
                g(&s.held),
                g(&s.transfers),
                g(&s.repairs),
                g(&s.stored)
            ));
        }
    }
    lines.join("\n")
}

fn max_over(cluster: &Cluster, stage: Stage, get: impl Fn(&ReplicaStats) -> &std::sync::atomic::AtomicU64) -> u64 {
    cluster.control().stage_stats(stage).map(|(_, s)| ReplicaStats::get(get(s))).max().unwrap_or(0)
}

/// 1,000,000 commands with window 256 and checkpoint interval 128; the state every
/// stage holds never exceeds a bound derived from the window (and, for the reply cache, from
/// the clients and their window).
#[test]
fn memory_stays_bounded() {
    within(600, || {
        let d = description("window = 256\ncheckpoint_interval = 128\nbatch_size = 16");
        let cluster = Cluster::start(&d, |_| KvStore::default()).unwrap();
        let clients = 128;
        load(&cluster, clients, 1_000_000);
        let (w, batch, client_window) = (d.window, d.batch_size as u64, d.client_window);
        let held = |stage| max_over(&cluster, stage, |s| &s.held_max);
        let source_bound = batch + 4 * w;
        assert!(held(Stage::Source) <= source_bound, "source held {} > {source_bound}", held(Stage::Source));
        assert!(held(Stage::Proposer) <= 2 * w, "proposer held {} > {}", held(Stage::Proposer), 2 * w);
        assert!(held(Stage::Committer) <= 2 * w, "committer held {} > {}", held(Stage::Committer), 2 * w);
        let executor_bound = 2 * w + clients as u64 * client_window;
        assert!(held(Stage::Executor) <= executor_bound, "executor held {} > {executor_bound}", held(Stage::Executor));
        // The window really moved: the threshold followed the executors' checkpoints.
        let stable = max_over(&cluster, Stage::Proposer, |s| &s.stable);
        let next = max_over(&cluster, Stage::Executor, |s| &s.next);
        assert!(stable + 2 * w >= next && stable > 1_000, "threshold {stable}, executors at {next}");
        for e in 0..3 {
            // A write in progress has its new file renamed in before the oldest is removed: a
            // third file for the length of a directory sync is no checkpoint kept.
            let store = CheckpointStore::in_dir(&cluster.state_dir().join(format!("executor-{e}")));
            let until = std::time::Instant::now() + EVENT;
            while store.files().unwrap().len() > 2 && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(store.files().unwrap().len() <= 2, "executor {e} kept more than two checkpoints");
        }
        println!(
            "held max: source {}, proposer {}, committer {}, executor {}; threshold {stable}",
            held(Stage::Source),
            held(Stage::Proposer),
            held(Stage::Committer),
            held(Stage::Executor)
        );
        assert!(cluster.quiesce(EVENT));
        assert!(cluster.stop().digests_agree());
    });
}

/// An executor whose inbound commits are lost falls behind the threshold and catches up
/// through state transfer (a checkpoint sent through the dataflow): with its commits lost, that
/// is the only way it can move. It ends with the same digest.
#[test]
fn a_lagging_executor_catches_up_by_state_transfer() {
    within(300, || {
        let d = description("window = 64\ncheckpoint_interval = 32\nbatch_size = 1");
        let cluster = Cluster::start(&d, |_| KvStore::default()).unwrap();
        cluster.control().set_deaf(Stage::Executor, 2, true).unwrap();
        load(&cluster, 8, 2_000);
        let moved = wait_until(EVENT, || stat(&cluster, Stage::Executor, 2, |s| &s.next) >= 1_000);
        assert!(moved, "executor 2 did not follow:\n{}", dump(&cluster));
        assert!(stat(&cluster, Stage::Executor, 2, |s| &s.transfers) >= 1, "it moved without a state transfer");
        cluster.control().set_deaf(Stage::Executor, 2, false).unwrap();
        load(&cluster, 8, 500);
        assert!(cluster.quiesce(EVENT), "executor 2 did not catch up:\n{}", dump(&cluster));
        assert!(cluster.stop().digests_agree());
    });
}

/// Section III-D: a proposer with a full window stalls and resumes when the threshold
/// rises; no request is lost (each sequential create creates exactly one znode). Rounds of 16
/// concurrent creates go on until the proposer has counted a stall (at least 20 rounds): how
/// soon the window fills depends on how fast the executors checkpoint, not on the property.
#[test]
fn a_full_window_stalls_and_resumes() {
    within(300, || {
        let d = description("window = 4\ncheckpoint_interval = 2\nbatch_size = 1\nretry_timeout_ms = 50");
        let cluster = Cluster::start(&d, |_| Coordination::default()).unwrap();
        let mut setup = cluster.client();
        setup.set_deadline(EVENT);
        setup.invoke(CoordOp::Create { path: "/q".into(), data: vec![], sequential: false }.encode()).unwrap();
        let mut pool = cluster.pool();
        let ids: Vec<u64> = (0..16).map(|_| pool.add_client()).collect();
        let create = CoordOp::Create { path: "/q/n-".into(), data: vec![], sequential: true }.encode();
        let until = std::time::Instant::now() + EVENT;
        let mut rounds = 0;
        while rounds < 20
            || (stat(&cluster, Stage::Proposer, 0, |s| &s.stalls) == 0 && std::time::Instant::now() < until)
        {
            for id in &ids {
                pool.submit(*id, create.clone()).unwrap();
            }
            while pool.outstanding() > 0 {
                pool.poll(EVENT).unwrap().expect("an answer");
            }
            rounds += 1;
        }
        assert!(stat(&cluster, Stage::Proposer, 0, |s| &s.stalls) > 0, "the window never filled in {rounds} rounds");
        let children = decode_result(&setup.invoke(CoordOp::GetChildren { path: "/q".into() }.encode()).unwrap());
        let Ok(Ok(CoordResponse::Children(names))) = children else { panic!("{children:?}") };
        assert_eq!(names.len(), 16 * rounds, "a request was lost or executed twice");
        assert!(stat(&cluster, Stage::Proposer, 0, |s| &s.held_max) <= 2 * 4);
        assert!(cluster.stop().digests_agree());
    });
}

/// The sequence numbers of an executor's checkpoint files.
fn checkpoints_of(cluster: &Cluster, executor: u32) -> Vec<u64> {
    let store = CheckpointStore::in_dir(&cluster.state_dir().join(format!("executor-{executor}")));
    store.files().unwrap().into_iter().map(|(s, _)| s).collect()
}

/// After a restart an executor has lost its memory but keeps its checkpoint directory:
/// it loads its newest valid checkpoint and catches up.
#[test]
fn a_restarted_executor_loads_its_newest_checkpoint() {
    within(300, || {
        let d = description("window = 64\ncheckpoint_interval = 32\nbatch_size = 1");
        let cluster = Cluster::start(&d, |_| KvStore::default()).unwrap();
        load(&cluster, 8, 1_000);
        assert!(cluster.quiesce(EVENT));
        assert!(wait_until(EVENT, || checkpoints_of(&cluster, 1).len() == 2));
        cluster.control().crash(Stage::Executor, 1).unwrap();
        let newest = *checkpoints_of(&cluster, 1).last().unwrap();
        cluster.control().restart(Stage::Executor, 1).unwrap();
        let restored = wait_until(EVENT, || stat(&cluster, Stage::Executor, 1, |s| &s.next) >= newest);
        assert!(restored, "executor 1 did not load checkpoint {newest}");
        assert_eq!(stat(&cluster, Stage::Executor, 1, |s| &s.transfers), 0, "it had its own checkpoint");
        load(&cluster, 8, 1_000);
        assert!(cluster.quiesce(EVENT), "executor 1 did not catch up:\n{}", dump(&cluster));
        assert!(cluster.stop().digests_agree());
    });
}

/// A corrupted checkpoint file is rejected, and the executor recovers from a peer.
#[test]
fn a_corrupt_checkpoint_is_rejected_and_a_peer_supplies_one() {
    within(300, || {
        let state = tempfile::tempdir().unwrap();
        let d = description("window = 64\ncheckpoint_interval = 32\nbatch_size = 1");
        let options = Options { state_dir: Some(state.path().to_path_buf()), ..Options::default() };
        let cluster = Cluster::start_with(&d, |_| KvStore::default(), options).unwrap();
        load(&cluster, 8, 1_000);
        assert!(cluster.quiesce(EVENT));
        cluster.control().crash(Stage::Executor, 0).unwrap();
        let dir = state.path().join("executor-0");
        let store = CheckpointStore::in_dir(&dir);
        for (_, path) in store.files().unwrap() {
            let mut bytes = std::fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x5a;
            std::fs::write(&path, bytes).unwrap();
        }
        let loaded = store.load_newest().unwrap();
        assert!(loaded.newest.is_none() && loaded.rejected.len() == 2, "both files are corrupt and rejected");
        cluster.control().restart(Stage::Executor, 0).unwrap();
        load(&cluster, 8, 1_000);
        assert!(cluster.quiesce(EVENT), "executor 0 did not recover:\n{}", dump(&cluster));
        assert!(stat(&cluster, Stage::Executor, 0, |s| &s.transfers) >= 1, "recovered without a peer's checkpoint");
        assert!(cluster.stop().digests_agree());
    });
}
