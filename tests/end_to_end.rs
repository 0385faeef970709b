//! The request path end to end on an embedded f = 1 cluster (Section III-C): many clients, the
//! coordination service, every executor replica executing the same sequence.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::{description, within};
use tara::app::coordination::{CoordError, CoordOp, CoordResponse, Coordination, Stat, decode_result};
use tara::cluster::{Client, Cluster, Options};
use tara::dataflow::{ReplicaStats, Stage};
use tara::protocol::Executed;

/// What one executor replica executed: (sequence, index) -> (client, timestamp, result).
type Log = BTreeMap<(u64, u32), (u64, u64, Vec<u8>)>;

/// A client's private model of its own subtree: the results it must get are known in advance.
struct Model {
    root: String,
    nodes: BTreeMap<String, (Vec<u8>, u32)>,
}

impl Model {
    fn run(&mut self, client: &mut Client, op: CoordOp) -> Result<CoordResponse, CoordError> {
        let bytes = client.invoke(op.encode()).expect("the cluster answers");
        decode_result(&bytes).expect("a well-formed result")
    }

    /// One round of operations on key `k`, each checked against the model.
    fn round(&mut self, client: &mut Client, k: u64) {
        let path = format!("{}/k{}", self.root, k % 40);
        let data = format!("{}:{k}", self.root).into_bytes();
        match self.nodes.get(&path).cloned() {
            None => {
                let got =
                    self.run(client, CoordOp::Create { path: path.clone(), data: data.clone(), sequential: false });
                assert_eq!(got, Ok(CoordResponse::Created { path: path.clone() }));
                self.nodes.insert(path.clone(), (data, 0));
            }
            Some((old, version)) => {
                let stale = self.run(
                    client,
                    CoordOp::SetData { path: path.clone(), data: data.clone(), version: Some(version + 1) },
                );
                let expected = CoordError::BadVersion { path: path.clone(), expected: version + 1, actual: version };
                assert_eq!(stale, Err(expected));
                let read = self.run(client, CoordOp::GetData { path: path.clone() });
                assert_eq!(read, Ok(CoordResponse::Data { data: old, stat: Stat { version, num_children: 0 } }));
                if k.is_multiple_of(7) {
                    let deleted = self.run(client, CoordOp::Delete { path: path.clone(), version: Some(version) });
                    assert_eq!(deleted, Ok(CoordResponse::Deleted));
                    self.nodes.remove(&path);
                } else {
                    let set = self.run(
                        client,
                        CoordOp::SetData { path: path.clone(), data: data.clone(), version: Some(version) },
                    );
                    assert_eq!(set, Ok(CoordResponse::Set(Stat { version: version + 1, num_children: 0 })));
                    self.nodes.insert(path.clone(), (data, version + 1));
                }
            }
        }
        if k.is_multiple_of(10) {
            let children = self.run(client, CoordOp::GetChildren { path: self.root.clone() });
            let expected: Vec<String> =
                self.nodes.keys().map(|p| p.rsplit('/').next().unwrap_or("").to_string()).collect();
            assert_eq!(children, Ok(CoordResponse::Children(expected)));
        }
    }
}

/// 8+ concurrent clients, 10,000+ commands on the coordination service; every client
/// gets the right result for every command, every executor replica executes the same sequence
/// and ends with the same digest.
#[test]
fn many_clients_every_replica_executes_the_same_sequence() {
    within(120, || {
        let (executed_tx, executed_rx) = crossbeam_channel::unbounded::<Executed>();
        let options = Options { executed: Some(executed_tx), ..Options::default() };
        let cluster = Cluster::start_with(&description(""), |_| Coordination::default(), options).unwrap();
        let mut setup = cluster.client();
        setup.invoke(CoordOp::Create { path: "/shared".into(), data: vec![], sequential: false }.encode()).unwrap();

        let clients = 8;
        let names: Vec<Vec<String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..clients)
                .map(|i| {
                    let mut client = cluster.client();
                    scope.spawn(move || {
                        let root = format!("/c{i}");
                        let mut model = Model { root: root.clone(), nodes: BTreeMap::new() };
                        let made =
                            model.run(&mut client, CoordOp::Create { path: root, data: vec![], sequential: false });
                        assert!(made.is_ok(), "{made:?}");
                        let mut names = Vec::new();
                        for k in 0..500 {
                            model.round(&mut client, k);
                            if k.is_multiple_of(25) {
                                let op =
                                    CoordOp::Create { path: "/shared/seq-".into(), data: vec![], sequential: true };
                                match model.run(&mut client, op) {
                                    Ok(CoordResponse::Created { path }) => names.push(path),
                                    other => panic!("sequential create gave {other:?}"),
                                }
                            }
                        }
                        names
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let all: Vec<&String> = names.iter().flatten().collect();
        let distinct: HashSet<&&String> = all.iter().collect();
        assert_eq!(all.len(), distinct.len(), "two clients got the same sequential name");

        assert!(cluster.quiesce(Duration::from_secs(30)), "executors did not reach the same position");
        let report = cluster.stop();
        assert!(!report.aborted);
        assert!(report.digests_agree(), "executor digests differ: {:?}", report.executors);

        // Every replica executed the same command with the same result at every position it
        // executed itself, and together they cover every position.
        let mut per_replica: HashMap<u32, Log> = HashMap::new();
        for x in executed_rx.try_iter() {
            let entry = (x.command.client, x.command.timestamp, x.result);
            per_replica.entry(x.executor).or_default().insert((x.sequence, x.index), entry);
        }
        assert_eq!(per_replica.len(), 3, "every executor replica executed something");
        let mut union: Log = BTreeMap::new();
        for log in per_replica.values() {
            for (position, entry) in log {
                let previous = union.insert(*position, entry.clone());
                assert!(previous.is_none_or(|p| &p == entry), "replicas disagree at {position:?}");
            }
        }
        assert!(union.len() >= 10_000, "only {} commands executed", union.len());
        let executed_per_replica: Vec<usize> = per_replica.values().map(|l| l.len()).collect();
        println!("commands executed: {}, per replica {executed_per_replica:?}", union.len());
    });
}

/// A command with a malformed operation gets an error reply, and the cluster keeps
/// serving the same client and the others.
#[test]
fn a_malformed_operation_gets_an_error_and_others_are_served() {
    within(60, || {
        let cluster = Cluster::start(&description(""), |_| Coordination::default()).unwrap();
        let mut bad = cluster.client();
        let mut good = cluster.client();
        // An empty operation is a keep-alive: it reaches no application and answers empty.
        assert_eq!(bad.invoke(vec![]).unwrap(), Vec::<u8>::new());
        for garbage in [vec![0xff; 3], vec![42; 100]] {
            let answer = decode_result(&bad.invoke(garbage).unwrap()).unwrap();
            assert!(matches!(answer, Err(CoordError::Malformed(_))), "{answer:?}");
            let ok = decode_result(&good.invoke(CoordOp::Exists { path: "/".into() }.encode()).unwrap()).unwrap();
            assert!(matches!(ok, Ok(CoordResponse::Exists(Some(_)))));
        }
        let still = decode_result(&bad.invoke(CoordOp::GetChildren { path: "/".into() }.encode()).unwrap()).unwrap();
        assert_eq!(still, Ok(CoordResponse::Children(vec![])));
        assert!(cluster.stop().digests_agree());
    });
}

/// pipelining (Section VI-B): with a window of 64 the proposer has more than one
/// instance in flight at once, and never more than the window.
#[test]
fn the_proposer_pipelines_instances() {
    within(60, || {
        let cluster = Cluster::start(&description("window = 64\ncheckpoint_interval = 32\nbatch_size = 1"), |_| {
            Coordination::default()
        })
        .unwrap();
        let mut pool = cluster.pool();
        let ids: Vec<u64> = (0..16).map(|_| pool.add_client()).collect();
        for round in 0..50 {
            for id in &ids {
                pool.submit(*id, CoordOp::Exists { path: format!("/{round}") }.encode()).unwrap();
            }
            while pool.outstanding() > 0 {
                pool.poll(Duration::from_secs(5)).unwrap().expect("an answer");
            }
        }
        let (_, proposer) = cluster.control().stage_stats(Stage::Proposer).next().unwrap();
        let in_flight_max = ReplicaStats::get(&proposer.in_flight_max);
        assert!(in_flight_max > 1, "instances were proposed one at a time");
        assert!(in_flight_max <= 64, "the window was exceeded: {in_flight_max}");
        assert!(cluster.stop().digests_agree());
    });
}

/// `max_in_flight = 1` (the sequential baseline): proposers hear the commits, so each instance
/// frees the room for the next and the service goes on (if commits did not reach them, they
/// would wait for a stability threshold that needs `checkpoint_interval` instances first).
#[test]
fn one_instance_in_flight_still_serves() {
    within(60, || {
        let text = "window = 64\ncheckpoint_interval = 32\nbatch_size = 1\nmax_in_flight = 1";
        let cluster = Cluster::start(&description(text), |_| Coordination::default()).unwrap();
        let mut pool = cluster.pool();
        let ids: Vec<u64> = (0..8).map(|_| pool.add_client()).collect();
        for round in 0..10 {
            for id in &ids {
                pool.submit(*id, CoordOp::Exists { path: format!("/{round}") }.encode()).unwrap();
            }
            while pool.outstanding() > 0 {
                pool.poll(Duration::from_secs(20)).unwrap().expect("an answer");
            }
        }
        assert!(cluster.stop().digests_agree());
    });
}

/// The client API, blocking and pipelined, against every coordination-service error.
#[test]
fn coordination_service_errors_through_the_cluster() {
    within(60, || {
        let cluster = Cluster::start(&description(""), |_| Coordination::default()).unwrap();
        let mut c = cluster.client();
        let mut run = |op: CoordOp| decode_result(&c.invoke(op.encode()).unwrap()).unwrap();
        assert!(run(CoordOp::Create { path: "/a".into(), data: vec![1], sequential: false }).is_ok());
        assert!(run(CoordOp::Create { path: "/a/b".into(), data: vec![], sequential: false }).is_ok());
        assert_eq!(run(CoordOp::GetData { path: "/nope".into() }), Err(CoordError::NoNode("/nope".into())));
        assert_eq!(
            run(CoordOp::Create { path: "/a".into(), data: vec![], sequential: false }),
            Err(CoordError::NodeExists("/a".into()))
        );
        assert_eq!(
            run(CoordOp::SetData { path: "/a".into(), data: vec![], version: Some(5) }),
            Err(CoordError::BadVersion { path: "/a".into(), expected: 5, actual: 0 })
        );
        assert_eq!(run(CoordOp::Delete { path: "/a".into(), version: None }), Err(CoordError::NotEmpty("/a".into())));
        assert_eq!(
            run(CoordOp::Create { path: "/x/y".into(), data: vec![], sequential: false }),
            Err(CoordError::NoParent("/x/y".into()))
        );
        assert!(matches!(run(CoordOp::Exists { path: "no-slash".into() }), Err(CoordError::Malformed(_))));

        // Many commands outstanding on one client.
        let tickets: Vec<u64> = (0..32)
            .map(|i| {
                c.submit(CoordOp::Create { path: format!("/p{i}"), data: vec![], sequential: false }.encode()).unwrap()
            })
            .collect();
        for ticket in tickets {
            let done = c.wait(ticket).unwrap();
            assert!(matches!(decode_result(&done.result).unwrap(), Ok(CoordResponse::Created { .. })));
        }
        assert!(cluster.stop().digests_agree());
    });
}

/// Invalid descriptions are rejected by `Cluster::start` with the message, not a panic.
#[test]
fn an_invalid_description_does_not_start() {
    for (overrides, expected) in
        [("f = 0", "`f`"), ("workers = 0", "`workers`: must be at least 1"), ("window = 0", "`window`")]
    {
        let err = Cluster::start(&description(overrides), |_| Coordination::default()).err().expect("rejected");
        assert!(err.to_string().contains(expected), "{overrides}: {err}");
    }
}

/// A command without reply is retransmitted through another request source, and the
/// duplicates take effect once. A 5 ms batch timeout holds every command past the 1 ms retry
/// timeout, so nearly every command is sent twice or more; each sequential create must still
/// create exactly one znode.
#[test]
fn retransmissions_take_effect_once() {
    within(60, || {
        let cluster =
            Cluster::start(&description("retry_timeout_ms = 1\nbatch_timeout_ms = 5"), |_| Coordination::default())
                .unwrap();
        let mut pool = cluster.pool();
        let ids: Vec<u64> = (0..8).map(|_| pool.add_client()).collect();
        let mut setup = cluster.client();
        setup.invoke(CoordOp::Create { path: "/seq".into(), data: vec![], sequential: false }.encode()).unwrap();
        let create = CoordOp::Create { path: "/seq/n-".into(), data: vec![], sequential: true }.encode();
        let (mut created, mut retransmissions) = (0, 0);
        for _ in 0..50 {
            for id in &ids {
                pool.submit(*id, create.clone()).unwrap();
            }
            while pool.outstanding() > 0 {
                let done = pool.poll(Duration::from_secs(10)).unwrap().expect("an answer");
                assert!(matches!(decode_result(&done.result).unwrap(), Ok(CoordResponse::Created { .. })));
                retransmissions += done.retransmissions;
                created += 1;
            }
        }
        let children = decode_result(&setup.invoke(CoordOp::GetChildren { path: "/seq".into() }.encode()).unwrap());
        let Ok(Ok(CoordResponse::Children(names))) = children else { panic!("{children:?}") };
        assert_eq!(names.len(), created, "a retransmitted create took effect twice");
        assert!(retransmissions > 0, "the retry timeout never fired");
        assert!(cluster.stop().digests_agree());
    });
}
