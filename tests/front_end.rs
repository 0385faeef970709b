//! The client front end of a multi-process cluster over raw TCP (bad frames, pipelining,
//! many connections) and the checks `tara run` and `tara cluster` make before anything starts.
//! Everything on 127.0.0.1, free ports, bounded time; the harness kills every process it started.

mod common;
#[path = "common/procs.rs"]
mod procs;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use common::within;
use procs::{LocalCluster, free_ports};
use tara::app::coordination::{CoordError, CoordOp, CoordResponse, decode_result};
use tara::client::Client;
use tara::net::wire::{ClientFrame, FrameReader, MAX_FRAME_BYTES, ServerFrame, VERSION, encode};
use tara::protocol::{Command, Outcome};

/// Client ids of raw connections are even; the client library's ids are random and odd, so the
/// two never collide.
const RAW_CLIENTS: u64 = 0x7a7a_0000_0000_0000;

fn answer(client: &mut Client, op: CoordOp) -> Result<CoordResponse, CoordError> {
    let bytes = client.invoke(op.encode()).expect("the cluster answers");
    decode_result(&bytes).expect("a coordination result")
}

fn create(path: &str, data: &[u8]) -> CoordOp {
    CoordOp::Create { path: path.into(), data: data.to_vec(), sequential: false }
}

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
    stream
}

/// Reads until the server closes the connection (or the read timeout fails the test); returns
/// every byte received.
fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return bytes,
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!(
                "the server did not close the connection after {} bytes ({e}): {:?}",
                bytes.len(),
                frames(&bytes)
            ),
        }
    }
}

/// The server frames in `bytes`.
fn frames(bytes: &[u8]) -> Vec<ServerFrame> {
    let mut reader = FrameReader::new(MAX_FRAME_BYTES);
    reader.extend(bytes);
    let mut out = Vec::new();
    while let Some(frame) = reader.next_frame::<ServerFrame>() {
        out.push(frame.expect("the server sends well-formed frames"));
    }
    assert_eq!(reader.buffered(), 0, "a truncated frame after {out:?}");
    out
}

/// Sends `bytes` on a new connection to `addr` and checks that the answer is exactly one error
/// frame mentioning `expected`, followed by the end of the connection.
fn rejected(addr: &str, bytes: &[u8], expected: &str) {
    let mut stream = connect(addr);
    stream.write_all(bytes).expect("the bad frame is sent");
    let got = frames(&read_to_eof(&mut stream));
    match got.as_slice() {
        [ServerFrame::Error(text)] => assert!(text.contains(expected), "error {text:?} does not say {expected:?}"),
        other => panic!("expected one error frame saying {expected:?}, got {other:?}"),
    }
}

/// Reads one server frame from `stream` (blocking, within its read timeout).
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

/// A frame whose body does not decode, a frame of another protocol version and a frame
/// longer than `max_frame_bytes` each get exactly one `Error` frame saying what was wrong, and
/// then their connection is closed; a client on another connection keeps getting correct
/// answers before, between and after them.
#[test]
fn bad_frames_get_error_frames_and_others_keep_being_served() {
    within(150, || {
        let cluster = LocalCluster::start("max_frame_bytes = 4096");
        let addr = cluster.sources[0].clone();
        let mut client = Client::new(cluster.pool());
        client.set_deadline(Duration::from_secs(30));
        assert_eq!(answer(&mut client, create("/a", b"alpha")), Ok(CoordResponse::Created { path: "/a".into() }));

        // (a) The right length and version, and a body that is not a client frame.
        let mut garbage = 33u32.to_le_bytes().to_vec();
        garbage.push(VERSION);
        garbage.extend_from_slice(&[0xff; 32]);
        rejected(&addr, &garbage, "malformed frame");
        let got = answer(&mut client, CoordOp::GetData { path: "/a".into() });
        assert!(matches!(&got, Ok(CoordResponse::Data { data, .. }) if data == b"alpha"), "{got:?}");

        // (b) A well-formed frame of protocol version 99.
        let mut other_version = encode(&ClientFrame::Status);
        other_version[4] = 99;
        rejected(&addr, &other_version, "protocol version 99 is not supported");
        assert_eq!(answer(&mut client, create("/b", b"beta")), Ok(CoordResponse::Created { path: "/b".into() }));

        // (c) A header announcing 5000 bytes, over the limit of 4096: rejected on the header.
        rejected(&addr, &5000u32.to_le_bytes(), "frame of 5000 bytes exceeds the limit of 4096 bytes");

        // A frame just under the limit is still served.
        let mut near_limit = TcpStream::connect(&addr).expect("a connection");
        near_limit.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
        let op = create("/big", &vec![7u8; 3900]).encode();
        let frame = encode(&ClientFrame::Submit(Command {
            client: RAW_CLIENTS,
            timestamp: 1,
            answered_below: 0,
            op,
            origin: None,
        }));
        assert!(frame.len() - 4 <= 4096 && frame.len() > 3900, "{} bytes", frame.len());
        near_limit.write_all(&frame).expect("sent");
        match read_frame(&mut near_limit, &mut FrameReader::new(MAX_FRAME_BYTES)) {
            ServerFrame::Reply(reply) => assert_eq!(
                decode_result(&reply.result),
                Ok(Ok(CoordResponse::Created { path: "/big".into() })),
                "{reply:?}"
            ),
            other => panic!("expected a reply, got {other:?}"),
        }

        for (path, data) in [("/a", &b"alpha"[..]), ("/b", &b"beta"[..])] {
            let got = answer(&mut client, CoordOp::GetData { path: path.into() });
            assert!(matches!(&got, Ok(CoordResponse::Data { data: d, .. }) if d == data), "{path}: {got:?}");
        }
        assert_eq!(answer(&mut client, create("/c", b"")), Ok(CoordResponse::Created { path: "/c".into() }));
    });
}

/// 200 commands written back to back on one connection, without waiting for any
/// answer, are all answered on that connection, each exactly once and executed exactly once.
#[test]
fn many_commands_pipelined_on_one_connection() {
    within(150, || {
        // Every command of the batch is outstanding at once: the executors must remember all of
        // them so that none expires whatever order they execute in.
        let cluster = LocalCluster::start("client_window = 256");
        let mut admin = Client::new(cluster.pool());
        assert_eq!(answer(&mut admin, create("/pipe", b"")), Ok(CoordResponse::Created { path: "/pipe".into() }));

        let client = RAW_CLIENTS + 2;
        let mut bytes = Vec::new();
        for timestamp in 1..=200u64 {
            let op = create(&format!("/pipe/n{timestamp:03}"), &timestamp.to_le_bytes()).encode();
            bytes.extend(encode(&ClientFrame::Submit(Command {
                client,
                timestamp,
                answered_below: 1,
                op,
                origin: None,
            })));
        }
        let mut stream = connect(&cluster.sources[0]);
        stream.write_all(&bytes).expect("200 frames are sent");

        let mut answered = BTreeMap::new();
        let mut reader = FrameReader::new(MAX_FRAME_BYTES);
        while answered.len() < 200 {
            let reply = match read_frame(&mut stream, &mut reader) {
                ServerFrame::Reply(reply) => reply,
                other => panic!("expected replies only, got {other:?} after {} replies", answered.len()),
            };
            assert_eq!(reply.client, client, "{reply:?}");
            assert!((1..=200).contains(&reply.timestamp), "{reply:?}");
            assert_eq!(reply.outcome, Outcome::Executed, "{reply:?}");
            let result = decode_result(&reply.result).expect("a coordination result");
            let path = format!("/pipe/n{:03}", reply.timestamp);
            assert_eq!(result, Ok(CoordResponse::Created { path }), "timestamp {}", reply.timestamp);
            assert!(answered.insert(reply.timestamp, ()).is_none(), "timestamp {} answered twice", reply.timestamp);
        }
        let children = answer(&mut admin, CoordOp::GetChildren { path: "/pipe".into() });
        let expected: Vec<String> = (1..=200).map(|t| format!("n{t:03}")).collect();
        assert_eq!(children, Ok(CoordResponse::Children(expected)));
    });
}

/// Raises the soft limit on open files to at least `wanted` (up to the hard limit); child
/// processes started afterwards inherit it.
fn raise_open_files(wanted: libc::rlim_t) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0, "getrlimit");
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0, "setrlimit");
        }
    }
    assert!(limit.rlim_cur >= 2048, "only {} open files allowed", limit.rlim_cur);
}

/// The front ends hold 1,000 client connections open at once and answer a command on
/// each of them.
#[test]
fn a_thousand_connections_are_held_and_served() {
    within(120, || {
        raise_open_files(4096);
        let cluster = LocalCluster::start("");
        let mut streams: Vec<TcpStream> =
            (0..1000).map(|i| connect(&cluster.sources[i % cluster.sources.len()])).collect();
        let op = CoordOp::Exists { path: "/".into() }.encode();
        let client = |i: usize| RAW_CLIENTS + 1_000_000 + 2 * i as u64;
        for (i, stream) in streams.iter_mut().enumerate() {
            let command = Command { client: client(i), timestamp: 1, answered_below: 0, op: op.clone(), origin: None };
            stream.write_all(&encode(&ClientFrame::Submit(command))).expect("a command is sent");
        }
        for (i, stream) in streams.iter_mut().enumerate() {
            let reply = match read_frame(stream, &mut FrameReader::new(MAX_FRAME_BYTES)) {
                ServerFrame::Reply(reply) => reply,
                other => panic!("connection {i}: expected a reply, got {other:?}"),
            };
            assert_eq!((reply.client, reply.timestamp), (client(i), 1), "connection {i}");
            let result = decode_result(&reply.result).expect("a coordination result");
            assert!(matches!(result, Ok(CoordResponse::Exists(Some(_)))), "connection {i}: {result:?}");
        }
        // Still all open and served: a second command on the first and the last connection.
        for i in [0, 999] {
            let command = Command { client: client(i), timestamp: 2, answered_below: 2, op: op.clone(), origin: None };
            streams[i].write_all(&encode(&ClientFrame::Submit(command))).expect("a command is sent");
            match read_frame(&mut streams[i], &mut FrameReader::new(MAX_FRAME_BYTES)) {
                ServerFrame::Reply(reply) => assert_eq!((reply.client, reply.timestamp), (client(i), 2)),
                other => panic!("connection {i}: expected a reply, got {other:?}"),
            }
        }
    });
}

/// Runs `tara ARGS`, which must exit within 20 s; returns its exit code and stderr.
fn tara(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Process::new(env!("CARGO_BIN_EXE_tara"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tara starts");
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for tara") {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tara {args:?} did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child.stderr.take().expect("piped stderr").read_to_string(&mut stderr).expect("stderr");
    (status.code(), stderr)
}

/// Checks that `tara ARGS` fails with exit code 2 and `error: ...expected...` on stderr.
fn fails_with(args: &[&str], expected: &str) {
    let (code, stderr) = tara(args);
    assert_eq!(code, Some(2), "tara {args:?} should fail with exit code 2; stderr: {stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(line.contains(expected), "tara {args:?}: {line:?} does not say {expected:?}");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("a file is written");
    path.to_str().expect("a UTF-8 path").to_string()
}

/// A description of three processes; `process` gives each process's (timely, clients)
/// addresses.
fn description(head: &str, state: &Path, processes: &[(String, String)]) -> String {
    let mut text = format!("{head}\nworkers = 1\nstate_dir = {:?}\n", state.to_str().expect("a UTF-8 path"));
    for (timely, clients) in processes {
        text.push_str(&format!("[[process]]\ntimely = \"{timely}\"\nclients = \"{clients}\"\n"));
    }
    text
}

/// `tara run` and `tara cluster` check the description, the hostfile and the flags
/// before starting anything, and exit at once (code 2) with a message that names the problem:
/// a repeated address, an index out of range, a hostfile with a repeated, malformed or missing
/// line, a wrong `-n`, an address that cannot be bound, `f = 0`, no `[[process]]`.
#[test]
fn invalid_descriptions_and_hostfiles_are_rejected_clearly() {
    within(150, || {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let state = dir.path().join("state");
        let mut ports = free_ports(9).into_iter().map(|p| format!("127.0.0.1:{p}"));
        let mut local = || ports.next().expect("nine ports");
        let processes: Vec<(String, String)> = (0..3).map(|_| (local(), local())).collect();
        let good = write(dir.path(), "good.toml", &description("f = 1", &state, &processes));

        let mut twice = processes.clone();
        twice[2].1 = processes[1].0.clone();
        let twice = write(dir.path(), "twice.toml", &description("f = 1", &state, &twice));
        fails_with(
            &["run", "--config", &twice, "--process", "0"],
            &format!("[[process]] 2: address {} is used twice", processes[1].0),
        );

        fails_with(
            &["run", "--config", &good, "--process", "7"],
            "process index 7 is out of range: the description has 3 processes",
        );

        let hosts: Vec<String> = (0..3).map(|_| local()).collect();
        let repeated = write(dir.path(), "repeated.hosts", &format!("{}\n{}\n{}\n", hosts[0], hosts[1], hosts[0]));
        fails_with(
            &["run", "--config", &good, "--process", "0", "-h", &repeated],
            &format!("line 3: {} is listed twice", hosts[0]),
        );
        let malformed = write(dir.path(), "malformed.hosts", &format!("{}\nlocalhost\n{}\n", hosts[0], hosts[2]));
        fails_with(
            &["run", "--config", &good, "--process", "0", "-h", &malformed],
            "line 2: \"localhost\" is not host:port",
        );
        let short = write(dir.path(), "short.hosts", &format!("{}\n{}\n", hosts[0], hosts[1]));
        fails_with(
            &["run", "--config", &good, "--process", "0", "-h", &short],
            "the hostfile lists 2 processes but the description has 3 [[process]] entries",
        );

        fails_with(
            &["run", "--config", &good, "--process", "0", "-n", "5"],
            "-n 5 does not match the 3 processes of the description",
        );

        // 192.0.2.0/24 (TEST-NET-1) is never assigned locally: bind fails at once, nothing connects.
        let mut foreign = processes.clone();
        foreign[0].0 = "192.0.2.1:7000".into();
        let foreign = write(dir.path(), "foreign.toml", &description("f = 1", &state, &foreign));
        fails_with(&["run", "--config", &foreign, "--process", "0"], "cannot listen for timely on 192.0.2.1:7000");

        // Process 0's metrics would listen on its own client address.
        let clash = format!("f = 1\nmetrics_addr = {:?}", processes[0].1);
        let clash = write(dir.path(), "clash.toml", &description(&clash, &state, &processes));
        fails_with(
            &["run", "--config", &clash, "--process", "0"],
            &format!("[[process]] 0: address {} is used twice", processes[0].1),
        );
        let zero =
            write(dir.path(), "zero.toml", &description("f = 1\nmetrics_addr = \"127.0.0.1:0\"", &state, &processes));
        fails_with(&["run", "--config", &zero, "--process", "0"], "`metrics_addr`: name a port");

        let f0 = write(dir.path(), "f0.toml", &description("f = 0", &state, &processes));
        fails_with(&["run", "--config", &f0, "--process", "0"], "`f`: must be at least 1");

        let embedded = write(dir.path(), "embedded.toml", &description("f = 1", &state, &[]));
        fails_with(&["cluster", "--config", &embedded], "`[[process]]`");
        fails_with(&["run", "--config", &embedded, "--process", "0"], "`[[process]]`");

        // Nothing was started: the checks come before any state is written.
        assert!(!state.exists(), "a rejected process wrote state");
    });
}
