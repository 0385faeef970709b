//! The bounds of a front end and where its replies go: a flood from one connection stays
//! within the connection's byte bound (observed through the front end's counters) while another
//! client keeps being served, every flooded command gets a reply or a busy frame, and a
//! connection receives only the replies of the commands it submitted, even if another
//! connection claims the same client id.

mod common;
#[path = "common/procs.rs"]
mod procs;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{wait_until, within};
use procs::LocalCluster;
use tara::app::coordination::{CoordError, CoordOp, CoordResponse, RESULT_BYTES_MAX, decode_result};
use tara::client::{Client, tcp};
use tara::net::FrontEndCounters;
use tara::net::wire::{ClientFrame, FrameReader, MAX_FRAME_BYTES, ServerFrame, encode};
use tara::protocol::{Command, Reply};

/// Client ids of raw connections are even; the client library's are random.
const RAW_CLIENTS: u64 = 0x7b7b_0000_0000_0000;

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
    stream
}

fn submit(client: u64, timestamp: u64, op: &CoordOp) -> Vec<u8> {
    encode(&ClientFrame::Submit(Command { client, timestamp, answered_below: 0, op: op.encode(), origin: None }))
}

fn create(path: &str) -> CoordOp {
    CoordOp::Create { path: path.into(), data: Vec::new(), sequential: false }
}

/// Reads one server frame (within the read timeout).
fn read_frame(stream: &mut TcpStream, reader: &mut FrameReader) -> ServerFrame {
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(frame) = reader.next_frame::<ServerFrame>() {
            return frame.expect("a well-formed server frame");
        }
        match stream.read(&mut buffer) {
            Ok(0) => panic!("the server closed the connection"),
            Ok(n) => reader.extend(&buffer[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("no frame from the server: {e}"),
        }
    }
}

/// Asks for a status report and returns every frame received before it: on one connection the
/// front end answers in order, so these are all the frames sent to it until then.
fn frames_until_status(stream: &mut TcpStream, reader: &mut FrameReader) -> Vec<ServerFrame> {
    stream.write_all(&encode(&ClientFrame::Status)).expect("a status request");
    let mut got = Vec::new();
    loop {
        match read_frame(stream, reader) {
            ServerFrame::Status(_) => return got,
            frame => got.push(frame),
        }
    }
}

fn reply(frame: ServerFrame) -> Reply {
    match frame {
        ServerFrame::Reply(reply) => reply,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn created(reply: &Reply, path: &str) {
    assert_eq!(decode_result(&reply.result), Ok(Ok(CoordResponse::Created { path: path.into() })), "{reply:?}");
}

fn counters(addr: &str) -> FrontEndCounters {
    tcp::counters(addr, Duration::from_secs(10)).expect("the front end reports its counters")
}

/// Two connections claim one client id; each receives exactly the replies of the commands it
/// submitted, a third that submits nothing receives none, the survivor keeps being answered
/// after the other closes, and a command resubmitted on another connection (a failover) is
/// answered there.
#[test]
fn a_connection_receives_only_its_own_replies() {
    within(150, || {
        let cluster = LocalCluster::start("");
        let addr = cluster.sources[0].clone();
        let client = RAW_CLIENTS + 2;
        let (mut a, mut b, mut idle) = (connect(&addr), connect(&addr), connect(&addr));
        let (mut ra, mut rb, mut ri) =
            (FrameReader::new(MAX_FRAME_BYTES), FrameReader::new(MAX_FRAME_BYTES), FrameReader::new(MAX_FRAME_BYTES));

        // B first, then A: the client's last connection is A's.
        b.write_all(&submit(client, 1, &create("/own1"))).expect("sent");
        created(&reply(read_frame(&mut b, &mut rb)), "/own1");
        a.write_all(&submit(client, 2, &create("/own2"))).expect("sent");
        a.write_all(&submit(client, 3, &create("/own3"))).expect("sent");
        let mut on_a: BTreeMap<u64, Reply> = BTreeMap::new();
        while on_a.len() < 2 {
            let r = reply(read_frame(&mut a, &mut ra));
            assert!(on_a.insert(r.timestamp, r).is_none(), "a reply came twice");
        }
        assert_eq!(on_a.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        created(&on_a[&2], "/own2");
        created(&on_a[&3], "/own3");
        assert!(frames_until_status(&mut a, &mut ra).is_empty(), "A received more than its replies");
        assert!(frames_until_status(&mut b, &mut rb).is_empty(), "B received A's replies");
        assert!(frames_until_status(&mut idle, &mut ri).is_empty(), "a connection that submitted nothing got replies");

        // A leaves; B, which claims the same client, is still answered.
        let before = counters(&addr).connections;
        drop(a);
        assert!(wait_until(Duration::from_secs(60), || counters(&addr).connections < before), "A's close is noticed");
        b.write_all(&submit(client, 4, &create("/own4"))).expect("sent");
        let r = reply(read_frame(&mut b, &mut rb));
        assert_eq!(r.timestamp, 4);
        created(&r, "/own4");

        // B resubmits A's command 2, as a client failing over would: the answer comes to B.
        b.write_all(&submit(client, 2, &create("/own2"))).expect("sent");
        let r = reply(read_frame(&mut b, &mut rb));
        assert_eq!(r.timestamp, 2);
        created(&r, "/own2");
        assert!(frames_until_status(&mut b, &mut rb).is_empty(), "B received more than its replies");
        assert!(frames_until_status(&mut idle, &mut ri).is_empty(), "a connection that submitted nothing got replies");
    });
}

const FLOOD: u64 = 5000;
const MAX_OUTSTANDING: u64 = 16;
const MAX_CONNECTION_BYTES: u64 = 16384;

/// One connection writes 5,000 commands and reads nothing. The front end takes
/// `max_outstanding` of them and answers others busy, reading only while the connection holds
/// less than half of `max_connection_bytes` (TCP's buffers hold the rest): its buffered bytes
/// stay within the bound while a second client on the same front end is served. Once the flooder reads, every one of its commands gets exactly one reply or busy
/// frame: nothing is dropped silently.
#[test]
fn a_flood_from_one_connection_stays_bounded_and_others_are_served() {
    within(240, || {
        let cluster = LocalCluster::start(&format!(
            "max_frame_bytes = 4096\nmax_outstanding = {MAX_OUTSTANDING}\nmax_connection_bytes = {MAX_CONNECTION_BYTES}"
        ));
        let addr = cluster.sources[0].clone();
        let op = CoordOp::Exists { path: "/".into() };
        let client = |i: u64| RAW_CLIENTS + 1_000 + 2 * i;
        let mut flood = connect(&addr);
        let mut writer = flood.try_clone().expect("a second handle");
        let bytes: Vec<u8> = (0..FLOOD).flat_map(|i| submit(client(i), 1, &op)).collect();
        let written = std::thread::spawn(move || writer.write_all(&bytes).expect("the flood is written"));

        let within_bounds = |c: &FrontEndCounters| {
            assert!(c.peak_connection_bytes <= MAX_CONNECTION_BYTES, "over the byte bound: {c:?}");
            assert!(c.outstanding <= MAX_OUTSTANDING * c.connections, "over the outstanding bound: {c:?}");
            assert_eq!(c.overruns, 0, "{c:?}");
        };
        let busy = wait_until(Duration::from_secs(60), || {
            let c = counters(&addr);
            within_bounds(&c);
            c.busy > 0 && c.submitted >= MAX_OUTSTANDING
        });
        assert!(busy, "the flood is answered busy: {:?}", counters(&addr));

        // Another client, on the same front end, is served while the flood waits.
        let mut other = Client::new(tcp::pool(std::slice::from_ref(&addr), LocalCluster::options()).expect("a pool"));
        other.set_deadline(Duration::from_secs(30));
        for i in 0..20 {
            let got = other.invoke(create(&format!("/served{i}")).encode()).expect("the other client is served");
            assert_eq!(decode_result(&got), Ok(Ok(CoordResponse::Created { path: format!("/served{i}") })));
        }
        let c = counters(&addr);
        within_bounds(&c);
        // Far more than the bound went through this connection, yet it never held more.
        let frame = submit(client(0), 1, &op).len() as u64;
        assert!((c.busy + c.submitted) * frame > 4 * MAX_CONNECTION_BYTES, "{c:?}");

        // The flooder reads: every command gets exactly one answer, a reply or busy.
        let mut answered: BTreeMap<u64, bool> = BTreeMap::new();
        let mut reader = FrameReader::new(MAX_FRAME_BYTES);
        while answered.len() < FLOOD as usize {
            let (key, replied) = match read_frame(&mut flood, &mut reader) {
                ServerFrame::Reply(r) => ((r.client, r.timestamp), true),
                ServerFrame::Busy { command: Some(key), message } => {
                    assert!(message.contains("max_outstanding"), "{message}");
                    (key, false)
                }
                other => panic!("expected replies and busy frames, got {other:?}"),
            };
            assert_eq!(key.1, 1);
            let i = (key.0 - client(0)) / 2;
            assert!(i < FLOOD && client(i) == key.0, "a frame for a command never sent: {key:?}");
            assert!(answered.insert(i, replied).is_none(), "command {i} answered twice");
        }
        written.join().expect("the writer finished");
        let c = counters(&addr);
        within_bounds(&c);
        let replies = answered.values().filter(|r| **r).count() as u64;
        assert!((MAX_OUTSTANDING..FLOOD).contains(&replies), "{replies} replies, {c:?}");
        assert!(c.busy >= FLOOD - replies, "{c:?}");
    });
}

/// A front end at `max_connections` answers one more connection with a busy frame that names
/// the bound and closes it; the connections it holds are still served.
#[test]
fn connections_over_the_bound_are_told_busy() {
    within(150, || {
        // Long probes: the supervisor's own probes may find the front end full for a moment.
        let cluster = LocalCluster::start("max_connections = 6\nprobe_timeout_ms = 60000");
        let addr = cluster.sources[0].clone();
        let mut held = Vec::new();
        let mut refused = None;
        for _ in 0..12 {
            let mut stream = connect(&addr);
            stream.write_all(&encode(&ClientFrame::Status)).expect("a status request");
            match read_frame(&mut stream, &mut FrameReader::new(MAX_FRAME_BYTES)) {
                ServerFrame::Status(_) => held.push(stream),
                ServerFrame::Busy { command: None, message } => {
                    refused = Some(message);
                    break;
                }
                other => panic!("expected status or busy, got {other:?}"),
            }
        }
        let message = refused.expect("a connection over the bound is told busy");
        assert!(message.contains("max_connections") && message.contains('6'), "{message}");
        assert!(held.len() <= 6, "{} connections held", held.len());
        for stream in &mut held {
            let mut reader = FrameReader::new(MAX_FRAME_BYTES);
            assert!(frames_until_status(stream, &mut reader).is_empty());
        }
        assert!(counters_after_release(&addr, held).refused_connections >= 1);
    });
}

/// Closes `held` and reads the counters once a connection is free again.
fn counters_after_release(addr: &str, held: Vec<TcpStream>) -> FrontEndCounters {
    drop(held);
    let mut last = None;
    assert!(
        wait_until(Duration::from_secs(60), || {
            last = tcp::counters(addr, Duration::from_secs(10)).ok();
            last.is_some()
        }),
        "the front end serves again"
    );
    last.expect("counters")
}

/// A result larger than a frame: 1,100 children with names of 1 KB under one parent, so that
/// listing them (1.1 MB) exceeds `max_frame_bytes` (1 MiB). The client that asks gets a clear error
/// naming the bound, and the cluster keeps serving every other client.
#[test]
fn a_result_above_the_bound_gets_an_error_and_others_are_served() {
    within(240, || {
        let cluster = LocalCluster::start("checkpoint_interval = 32\nprobe_interval_ms = 100\nprobe_timeout_ms = 2000");
        let mut client = Client::new(cluster.pool());
        client.set_deadline(Duration::from_secs(60));
        let invoke = |client: &mut Client, op: CoordOp| {
            decode_result(&client.invoke(op.encode()).expect("the cluster answers")).expect("a coordination result")
        };
        assert!(invoke(&mut client, create("/big")).is_ok());
        for i in 0..1100 {
            let name = format!("/big/{i:04}{}", "x".repeat(1000));
            assert!(invoke(&mut client, create(&name)).is_ok());
        }
        let listed = invoke(&mut client, CoordOp::GetChildren { path: "/big".into() });
        let Err(CoordError::TooLarge { bytes, bound }) = listed else { panic!("{listed:?}") };
        assert!(bytes > 1100 * 1000 && bound == RESULT_BYTES_MAX, "{bytes} {bound}");
        let mut other = Client::new(cluster.pool());
        other.set_deadline(Duration::from_secs(60));
        for i in 0..20 {
            assert!(invoke(&mut other, create(&format!("/after{i}"))).is_ok());
        }
        std::thread::sleep(Duration::from_secs(10));
        for i in 20..40 {
            assert!(invoke(&mut other, create(&format!("/after{i}"))).is_ok());
        }
        // The refused listing did not stall the cluster: the supervisor never restarted it.
        assert!(cluster.lines("restart").is_empty(), "{:?}", cluster.lines("restart"));
        let answer = invoke(&mut client, CoordOp::Exists { path: "/big".into() });
        assert!(matches!(answer, Ok(CoordResponse::Exists(Some(_)))), "{answer:?}");
    });
}
