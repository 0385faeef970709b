//! Every front end of a cluster is a way in, and clients leave a front end that refuses them at
//! once: a process without a request source forwards commands through the dataflow, a refused
//! command goes to the next front end without waiting for the retry timeout, a client whose only
//! front end refuses fails with its message, and `tara bench` measures the cluster it says.
//! Everything on 127.0.0.1, free ports, bounded time; the harness kills every process it started.

mod common;
#[path = "common/procs.rs"]
mod procs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::within;
use procs::LocalCluster;
use tara::app::coordination::{CoordError, CoordOp, CoordResponse, decode_result};
use tara::client::{Client, ClientError, ClientOptions, tcp};
use tara::dataflow::{Control, Ingress, Mailboxes, Placement};
use tara::net::wire::{ClientFrame, FrameReader, MAX_FRAME_BYTES, ServerFrame, encode};
use tara::net::{FrontEnd, FrontEndConfig, frontend};
use tara::protocol::{Command, Outcome, Params, Reply};

fn create(path: &str) -> Vec<u8> {
    CoordOp::Create { path: path.into(), data: vec![], sequential: false }.encode()
}

/// Options whose retry timeout is far longer than any test bound: a command that completes in
/// time did so without a retransmission by timer.
fn patient() -> ClientOptions {
    ClientOptions { client_window: 64, retry_timeout: Duration::from_secs(60) }
}

/// The real front end of a process whose dataflow is stopping (between `control.stop()` and its
/// exit): it refuses every command, with its reason.
fn stopping_front_end() -> FrontEnd {
    let params = Params::default();
    let placement = Placement::spread(&params, 3, 1).expect("a placement");
    let control = Control::new(&placement);
    control.stop();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let config = FrontEndConfig {
        sources: Vec::new(),
        params,
        replicas: Vec::new(),
        max_frame_bytes: tara::net::wire::MAX_FRAME_BYTES,
        forward_through: None,
        cluster: None,
        limits: tara::net::Limits::default(),
    };
    frontend::spawn(listener, Ingress::new(2), Mailboxes::new(), control, config).expect("the front end starts")
}

/// Commands, one at a time, through a pool of `front_ends`: every one completes without a
/// retransmission.
fn two_hundred_without_retransmissions(front_ends: &[String], prefix: &str) {
    let mut pool = tcp::pool(front_ends, patient()).expect("a pool");
    let client = pool.add_client();
    for i in 0..200u64 {
        let ticket = pool.submit(client, create(&format!("/{prefix}{i}"))).expect("submitted");
        let done = pool.poll(Duration::from_secs(20)).expect("the cluster answers").expect("an answer in time");
        assert_eq!((done.timestamp, done.retransmissions), (ticket, 0), "command {i}");
        let answer = decode_result(&done.result).expect("a coordination result");
        assert_eq!(answer, Ok(CoordResponse::Created { path: format!("/{prefix}{i}") }));
    }
}

/// Commands front end `addr` took so far.
fn submitted(addr: &str) -> u64 {
    tcp::counters(addr, Duration::from_secs(5)).expect("the front end answers").submitted
}

/// Every front end is a way in: process 0's, which hosts no request source, forwards through
/// the dataflow, and a client given only it completes every command without one
/// retransmission (every forwarded reply comes back to it). A client given every front end
/// completes every command without one too, and sends them to the front ends that hand them to
/// a source of their own process: process 0's takes none of them.
#[test]
fn every_front_end_takes_commands_without_retransmissions() {
    within(120, || {
        let cluster = LocalCluster::start("");
        let sourceless = tcp::status(&cluster.every[0], Duration::from_secs(5)).expect("process 0 answers status");
        assert!(!sourceless.iter().any(|r| r.stage == "sources"), "process 0 hosts no request source: {sourceless:?}");
        two_hundred_without_retransmissions(&cluster.every[..1], "forwarded");
        assert!(submitted(&cluster.every[0]) >= 200, "process 0 took the commands and forwarded them");
        let before: Vec<u64> = cluster.every.iter().map(|a| submitted(a)).collect();
        two_hundred_without_retransmissions(&cluster.every, "direct");
        let taken: Vec<u64> = cluster.every.iter().zip(&before).map(|(a, b)| submitted(a) - b).collect();
        assert_eq!(taken[0], 0, "a client given every front end prefers the direct ones: {taken:?}");
        assert!(taken[1] > 0 && taken[2] > 0, "spread over the direct front ends: {taken:?}");
        assert!(cluster.remote().executors_agree(3, Duration::from_secs(30)), "the executors disagree");
    });
}

/// Sends `command` on a new connection to `addr` and returns the first reply.
fn submit_raw(addr: &str, command: &Command) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("the front end accepts");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("a read timeout");
    stream.write_all(&encode(&ClientFrame::Submit(command.clone()))).expect("sent");
    let (mut reader, mut buffer) = (FrameReader::new(MAX_FRAME_BYTES), [0u8; 4096]);
    loop {
        match reader.next_frame::<ServerFrame>() {
            Some(Ok(ServerFrame::Reply(reply))) => return reply,
            Some(other) => panic!("{addr} answered {other:?}"),
            None => {}
        }
        let n = stream.read(&mut buffer).expect("a reply before the read timeout");
        assert!(n > 0, "{addr} closed the connection");
        reader.extend(&buffer[..n]);
    }
}

/// A command sent again through another front end, the first time forwarded by the sourceless
/// process 0 and then straight to a request source (and the other way round), takes effect
/// once: the second answer is the cached first one, and one sequential znode exists.
#[test]
fn a_command_retried_through_another_front_end_takes_effect_once() {
    within(120, || {
        let cluster = LocalCluster::start("");
        let op = CoordOp::Create { path: "/dup-".into(), data: vec![], sequential: true }.encode();
        for (timestamp, order) in [(1, [0, 1]), (2, [2, 0])] {
            let command =
                Command { client: 0x5e5e_0000_0000_0002, timestamp, answered_below: 0, op: op.clone(), origin: None };
            let first = submit_raw(&cluster.every[order[0]], &command);
            let again = submit_raw(&cluster.every[order[1]], &command);
            assert_eq!((first.outcome, again.outcome), (Outcome::Executed, Outcome::Cached), "through {order:?}");
            assert_eq!(first.result, again.result);
        }
        let mut client = Client::new(tcp::pool(&cluster.every, patient()).expect("a pool"));
        let children = client.invoke(CoordOp::GetChildren { path: "/".into() }.encode()).expect("an answer");
        let expected = vec!["dup-0000000000".to_string(), "dup-0000000001".to_string()];
        assert_eq!(decode_result(&children), Ok(Ok(CoordResponse::Children(expected))));
    });
}

/// A command refused by one front end completes through the next at once, although the retry
/// timeout is 60 s; the front end that refused is not used again while its connection lasts.
#[test]
fn a_refused_command_goes_to_the_next_front_end_at_once() {
    within(120, || {
        let cluster = LocalCluster::start("");
        let stopping = stopping_front_end();
        let addresses = [stopping.addr.to_string(), cluster.every[1].clone()];
        let mut pool = tcp::pool(&addresses, patient()).expect("a pool");
        let client = pool.add_client();
        let started = Instant::now();
        let mut failed_over = 0;
        for i in 0..10u64 {
            let ticket = pool.submit(client, create(&format!("/r{i}"))).expect("submitted");
            let done = pool.poll(Duration::from_secs(20)).expect("the cluster answers").expect("an answer in time");
            assert_eq!(done.timestamp, ticket);
            failed_over += done.retransmissions;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
        // The pool's session opener (a keep-alive, not reported) may be the command that meets
        // the stopping front end first; the time bound shows that it moved on at once.
        assert!(
            failed_over <= 1,
            "the first command through the stopping front end moved on once, later ones skip it: {failed_over}"
        );
    });
}

/// A client whose only front end refuses fails at once with the front end's message, both the
/// library client (deadline 30 s) and `tara client` (timeout 30 s).
#[test]
fn a_client_whose_only_front_end_refuses_fails_at_once() {
    within(60, || {
        let stopping = stopping_front_end();
        let address = stopping.addr.to_string();
        let mut client = Client::new(tcp::pool(&[address.as_str()], patient()).expect("a pool"));
        client.set_deadline(Duration::from_secs(30));
        let started = Instant::now();
        let got = client.invoke(create("/x"));
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(
            matches!(&got, Err(ClientError::Refused(m)) if m.contains("stopping") && m.contains(&address)),
            "{got:?}"
        );

        let started = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tara"))
            .args(["client", "--connect", &address, "--timeout-ms", "30000", "ls", "/"])
            .output()
            .expect("tara runs");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("refused") && err.contains("the cluster is stopping"), "{err}");
    });
}

/// `tara bench --config` on the ports of a running cluster refuses before it sends anything
/// (the cluster has no `/pool` afterwards); `tara bench --connect` reports the running cluster's
/// shape (one worker per process, not the embedded three) and compares every process's
/// executors, though given one front end only.
#[test]
fn bench_measures_the_cluster_it_names() {
    within(180, || {
        let cluster = LocalCluster::start("");
        let out_dir = tempfile::tempdir().expect("a temporary directory");
        let config = cluster.config.to_str().expect("a UTF-8 path").to_string();
        let bench = |args: &[&str]| {
            let mut all = vec!["bench", "--seconds", "1", "--clients", "4", "--out"];
            all.push(out_dir.path().to_str().expect("a UTF-8 path"));
            all.extend_from_slice(args);
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_tara")).args(&all).output().expect("tara runs");
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (out.status.code(), text(&out.stdout), text(&out.stderr))
        };
        let started = Instant::now();
        let (code, _, err) = bench(&["--config", &config]);
        assert_ne!(code, Some(0), "{err}");
        assert!(err.contains("cannot listen on") && err.contains("--connect"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        let mut client = Client::new(tcp::pool(&cluster.every, patient()).expect("a pool"));
        let pool = client.invoke(CoordOp::GetData { path: "/pool".into() }.encode()).expect("an answer");
        assert!(matches!(decode_result(&pool), Ok(Err(CoordError::NoNode(_)))), "{:?}", decode_result(&pool));

        let (code, out, err) = bench(&["--connect", &cluster.every[0]]);
        assert_eq!(code, Some(0), "{out}\n{err}");
        assert!(err.contains("f = 1, 1 worker,"), "{err}");
        assert!(err.contains(&format!("executors of every process ({})", cluster.every.join(","))), "{err}");
        assert!(out.contains("digests agree true"), "{out}");
    });
}
