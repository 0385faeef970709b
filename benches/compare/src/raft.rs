//! openraft as its own minimal benchmark runs it: three nodes in one process, an in-memory log
//! store and state machine, and a network of plain function calls into the target node (no
//! sockets, no serialisation). Nothing is durable: this is openraft's best case.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{Stream, TryStreamExt};
use hdrhistogram::Histogram;
use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf};
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::storage::{
    EntryResponder, IOFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
};
use openraft::{Config, EntryPayload, OptionalSend, Raft};

use crate::Measurement;

/// The openraft release this crate is built against (pinned in `Cargo.toml`).
pub const VERSION: &str = "0.10.0-alpha.37";

/// Server threads: the tokio runtime that runs the three nodes.
const SERVER_THREADS: usize = 2;

/// A write: the payload the state machine keeps.
#[derive(Clone, Debug)]
pub struct Write(pub Vec<u8>);

impl fmt::Display for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "write of {} bytes", self.0.len())
    }
}

/// Writes of bytes answered with the number of writes applied so far; nodes are bare ids; the
/// leader id, entries and runtime are openraft's defaults, the responder is a oneshot channel
/// (as in openraft's own benchmark).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct TypeConfig;

/// Leader ids of the "advanced" kind, openraft's default.
type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, u64>;

impl openraft::RaftTypeConfig for TypeConfig {
    type D = Write;
    type R = u64;
    type NodeId = u64;
    type Node = ();
    type Term = u64;
    type LeaderId = LeaderId;
    type Vote = openraft::impls::Vote<LeaderId>;
    type Payload = EntryPayload<Write, u64, ()>;
    type Entry = openraft::Entry<<LeaderId as openraft::vote::RaftLeaderId>::Committed, Self::Payload>;
    type AsyncRuntime = openraft::impls::TokioRuntime;
    type Responder<T>
        = openraft::impls::OneshotResponder<Self, T>
    where
        T: OptionalSend + 'static;
    type Batch<T>
        = openraft::impls::InlineBatch<T>
    where
        T: OptionalSend + 'static;
    type ErrorSource = openraft::impls::BoxedErrorSource;
}

/// A node of the benchmark cluster.
type Node = Raft<TypeConfig, Arc<StateMachine>>;

/// The in-memory log of one node; locks are held only for the copy in or out.
#[derive(Default)]
struct LogStore {
    vote: Mutex<Option<VoteOf<TypeConfig>>>,
    log: Mutex<BTreeMap<u64, EntryOf<TypeConfig>>>,
    purged: Mutex<Option<LogIdOf<TypeConfig>>>,
}

/// Locks a mutex; a poisoned one (a panicking task) cannot occur with `panic = "abort"`, but
/// is taken over rather than propagated.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RaftLogReader<TypeConfig> for Arc<LogStore> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<TypeConfig>>, io::Error> {
        Ok(lock(&self.log).range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        Ok(*lock(&self.vote))
    }
}

impl RaftLogStorage<TypeConfig> for Arc<LogStore> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged = *lock(&self.purged);
        let last = lock(&self.log).values().next_back().map(|e| e.log_id).or(purged);
        Ok(LogState { last_purged_log_id: purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        *lock(&self.vote) = Some(*vote);
        Ok(())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        lock(&self.log).extend(entries.into_iter().map(|e| (e.log_id.index, e)));
        // In memory: "flushed" as soon as it is stored.
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogIdOf<TypeConfig>>) -> Result<(), io::Error> {
        let from = last.map_or(0, |id| id.index + 1);
        lock(&self.log).split_off(&from);
        Ok(())
    }

    async fn purge(&mut self, upto: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        *lock(&self.purged) = Some(upto);
        let mut log = lock(&self.log);
        *log = log.split_off(&(upto.index + 1));
        Ok(())
    }
}

/// What the trivial state machine holds: writes applied and the last payload.
#[derive(Clone, Debug, Default)]
pub struct Counter {
    /// Writes applied.
    count: u64,
    /// The last write's payload.
    last: Vec<u8>,
}

/// The trivial state machine of one node, with its latest snapshot (a copy of the state).
#[derive(Default)]
struct StateMachine {
    state: Mutex<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>, Counter)>,
    snapshot: Mutex<Option<SnapshotOf<TypeConfig, Counter>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for Arc<StateMachine> {
    type SnapshotData = Counter;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Counter>, io::Error> {
        let (applied, membership, counter) = lock(&self.state).clone();
        let meta = SnapshotMetaOf::<TypeConfig> { last_log_id: applied, last_membership: membership };
        let snapshot = SnapshotOf::<TypeConfig, Counter> { meta, snapshot: counter };
        *lock(&self.snapshot) = Some(snapshot.clone());
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for Arc<StateMachine> {
    type SnapshotData = Counter;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        let state = lock(&self.state);
        Ok((state.0, state.1.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let count = {
                let mut state = lock(&self.state);
                state.0 = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(Write(payload)) => {
                        state.2.count += 1;
                        state.2.last = payload;
                    }
                    EntryPayload::Membership(membership) => {
                        state.1 = StoredMembershipOf::<TypeConfig>::new(Some(entry.log_id), membership);
                    }
                }
                state.2.count
            };
            if let Some(responder) = responder {
                responder.send(count);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMetaOf<TypeConfig>, data: Counter) -> Result<(), io::Error> {
        *lock(&self.state) = (meta.last_log_id, meta.last_membership.clone(), data.clone());
        *lock(&self.snapshot) = Some(SnapshotOf::<TypeConfig, Counter> { meta: meta.clone(), snapshot: data });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<TypeConfig, Counter>>, io::Error> {
        Ok(lock(&self.snapshot).clone())
    }
}

/// The in-process network: every node's handle, looked up by id.
#[derive(Clone, Default)]
struct Router(Arc<Mutex<BTreeMap<u64, Node>>>);

/// A connection to one node: a direct call on its handle.
struct Connection {
    target: u64,
    node: Option<Node>,
}

impl Connection {
    /// The target's handle, or `Unreachable` if the router does not know it.
    fn node(&self) -> Result<&Node, Unreachable<TypeConfig>> {
        self.node.as_ref().ok_or_else(|| unreachable(format!("node {} is not in the router", self.target)))
    }
}

/// An `Unreachable` error with `why`.
fn unreachable(why: impl fmt::Display) -> Unreachable<TypeConfig> {
    Unreachable::new(&io::Error::other(why.to_string()))
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, _node: &()) -> Connection {
        Connection { target, node: lock(&self.0).get(&target).cloned() }
    }
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = Counter;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.node()?.append_entries(rpc).await.map_err(|e| RPCError::Unreachable(unreachable(e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.node()?.vote(rpc).await.map_err(|e| RPCError::Unreachable(unreachable(e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Counter>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        self.node()?
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| StreamingError::Unreachable(unreachable(e)))
    }
}

/// Starts three nodes (on the runtime it is awaited on) and makes node 0 the leader.
async fn start_cluster() -> Result<Vec<Node>, String> {
    // The settings of openraft's own minimal benchmark.
    let config = Config {
        election_timeout_min: 200,
        election_timeout_max: 2000,
        purge_batch_size: 1024,
        max_payload_entries: 1024,
        ..Default::default()
    };
    let config = Arc::new(config.validate().map_err(|e| format!("openraft config: {e}"))?);
    let router = Router::default();
    let ids: BTreeSet<u64> = (0..3).collect();
    let mut nodes = Vec::new();
    for id in &ids {
        let (log, sm) = (Arc::new(LogStore::default()), Arc::new(StateMachine::default()));
        let node =
            Raft::new(*id, config.clone(), router.clone(), log, sm).await.map_err(|e| format!("node {id}: {e}"))?;
        lock(&router.0).insert(*id, node.clone());
        nodes.push(node);
    }
    nodes[0].initialize(ids).await.map_err(|e| format!("initialize: {e}"))?;
    for node in &nodes {
        // Log 1 is the initial membership: applied everywhere means the cluster is up.
        node.wait(Some(Duration::from_secs(10)))
            .applied_index(Some(1), "initial membership")
            .await
            .map_err(|e| format!("cluster did not come up: {e}"))?;
    }
    Ok(nodes)
}

/// Runs `clients` closed-loop clients against a fresh cluster: `warmup`, then `measured`.
pub fn run(clients: usize, payload_bytes: usize, warmup: Duration, measured: Duration) -> Result<Measurement, String> {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(SERVER_THREADS)
        .enable_all()
        .thread_name("openraft-server")
        .build()
        .map_err(|e| format!("server runtime: {e}"))?;
    // Clients run on a thread of their own, as tara's pool does.
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("client runtime: {e}"))?;
    let nodes = server.block_on(start_cluster())?;
    let leader = nodes[0].clone();
    let result = client_rt.block_on(async {
        let start = Instant::now();
        let (from, until) = (start + warmup, start + warmup + measured);
        let tasks: Vec<_> =
            (0..clients).map(|_| tokio::spawn(client(leader.clone(), payload_bytes, from, until))).collect();
        let mut latency = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
        for task in tasks {
            latency.add(task.await.map_err(|e| format!("client task: {e}"))??).map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(Measurement::from_histogram(&latency, measured, 0))
    });
    server.block_on(async {
        for node in &nodes {
            let _ = node.shutdown().await;
        }
    });
    result
}

/// One closed-loop client: one write outstanding; latencies of writes answered in
/// `[from, until)` are recorded.
async fn client(leader: Node, payload_bytes: usize, from: Instant, until: Instant) -> Result<Histogram<u64>, String> {
    let mut latency = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    loop {
        let sent = Instant::now();
        leader.client_write(Write(vec![7; payload_bytes])).await.map_err(|e| format!("write: {e}"))?;
        let now = Instant::now();
        if now >= until {
            return Ok(latency);
        }
        if now >= from {
            let _ = latency.record(now.duration_since(sent).as_micros() as u64);
        }
    }
}
