//! The TCP connections between the processes of a cluster, made by tara rather than timely.
//!
//! Timely's own cluster start dials its peers once a second and checks its listener once a
//! second, so every start (and so every restart after a crash) loses about a second, and an
//! unreachable peer makes it retry forever. Here process `i` keeps its listener bound from the
//! start (early dialers wait in the backlog instead of being refused), dials every `j < i` every
//! 20 ms, accepts every `j > i`, and gives up after a timeout naming the addresses it waited for.
//! The connected sockets are then handed to timely
//! (`initialize_networking_from_sockets`), which speaks its own protocol over them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use timely::communication::allocator::AllocatorBuilder;
use timely::communication::allocator::ProcessBuilder;
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;

use super::config::ConfigError;

/// How often a dialer retries a peer that is not listening yet.
const RETRY: Duration = Duration::from_millis(20);

/// Connects process `me` to every other process of `addresses` within `timeout`, then builds
/// timely's allocators for `threads` workers over those connections. The returned guard must
/// live as long as the workers (it owns timely's network threads).
pub fn connect(
    addresses: &[String],
    me: usize,
    listener: TcpListener,
    threads: usize,
    timeout: Duration,
) -> Result<(Vec<AllocatorBuilder>, Box<dyn std::any::Any + Send>), ConfigError> {
    let deadline = Instant::now() + timeout;
    let peers = resolve(addresses)?;
    let accepted = std::thread::scope(|scope| {
        let acceptor = scope.spawn(|| accept(&listener, me, peers.len(), deadline));
        let dialed = dial(&peers, me, deadline);
        let accepted = acceptor.join().map_err(|_| ConfigError("the connection acceptor panicked".into()))?;
        Ok::<_, ConfigError>((dialed?, accepted?))
    })?;
    let (dialed, accepted) = accepted;
    let sockets: Vec<Option<TcpStream>> =
        dialed.into_iter().map(Some).chain(std::iter::once(None)).chain(accepted).collect();
    let hooks = timely::communication::Hooks::default();
    let local = ProcessBuilder::new_typed_vector(threads, hooks.refill.clone(), hooks.spill.clone());
    let (builders, guard) = initialize_networking_from_sockets(local, sockets, me, threads, hooks)
        .map_err(|e| ConfigError(format!("cannot start timely's network threads: {e}")))?;
    Ok((builders.into_iter().map(AllocatorBuilder::Tcp).collect(), Box::new(guard)))
}

fn resolve(addresses: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    addresses
        .iter()
        .map(|a| {
            a.to_socket_addrs()
                .ok()
                .and_then(|mut found| found.next())
                .ok_or_else(|| ConfigError(format!("timely address {a:?} does not resolve; use host:port")))
        })
        .collect()
}

/// Dials every process before `me`; each connection starts with this process's index.
fn dial(peers: &[SocketAddr], me: usize, deadline: Instant) -> Result<Vec<TcpStream>, ConfigError> {
    let mut streams = Vec::with_capacity(me);
    for (index, peer) in peers.iter().enumerate().take(me) {
        let stream = loop {
            match TcpStream::connect_timeout(peer, Duration::from_millis(500)) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() >= deadline => {
                    return Err(ConfigError(format!(
                        "process {me}: cannot reach process {index} at {peer} ({e}); start every process of the \
                         description and check that its address is reachable from this host (`connect_timeout_ms`)"
                    )));
                }
                Err(_) => std::thread::sleep(RETRY),
            }
        };
        let mut stream = stream;
        stream.set_nodelay(true).and_then(|()| stream.write_all(&(me as u64).to_le_bytes())).map_err(|e| {
            ConfigError(format!("process {me}: lost the connection to process {index} at {peer} while starting: {e}"))
        })?;
        streams.push(stream);
    }
    Ok(streams)
}

/// Accepts one connection from every process after `me`, in process order. A connection that
/// does not introduce itself as such a process within a second is dropped (a stray client).
fn accept(
    listener: &TcpListener,
    me: usize,
    processes: usize,
    deadline: Instant,
) -> Result<Vec<Option<TcpStream>>, ConfigError> {
    let mut streams: Vec<Option<TcpStream>> = (me + 1..processes).map(|_| None).collect();
    listener.set_nonblocking(true).map_err(|e| ConfigError(format!("cannot poll the timely listener: {e}")))?;
    while streams.iter().any(Option::is_none) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Some(index) = introduction(stream.try_clone().ok(), me, processes) {
                    let _ = stream.set_nodelay(true);
                    streams[index - me - 1] = Some(stream);
                }
            }
            Err(_) if Instant::now() >= deadline => {
                let missing: Vec<String> = streams
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.is_none())
                    .map(|(i, _)| (me + 1 + i).to_string())
                    .collect();
                return Err(ConfigError(format!(
                    "process {me}: processes {} did not connect in time; start every process of the description and \
                     check that this process's timely address is reachable from theirs (`connect_timeout_ms`)",
                    missing.join(", ")
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    Ok(streams)
}

/// Reads the index a dialer sends first; `None` unless it is a process after `me`.
fn introduction(stream: Option<TcpStream>, me: usize, processes: usize) -> Option<usize> {
    let mut stream = stream?;
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut bytes = [0u8; 8];
    stream.read_exact(&mut bytes).ok()?;
    stream.set_read_timeout(None).ok()?;
    let index = u64::from_le_bytes(bytes) as usize;
    (me < index && index < processes).then_some(index)
}
