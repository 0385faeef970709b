//! Clients of a cluster over TCP: connect to a list of front ends, submit through any of them
//! (every front end takes commands), move on to the next one at once when one refuses a command,
//! reconnect after a restart.
//!
//! A front end at one of its bounds answers [`ServerFrame::Busy`]: the client backs off. The
//! command stays pending and is sent again after the retry timeout, through the next front end;
//! nothing fails and nothing is lost. Each busy frame is logged as a warning.
//!
//! ```no_run
//! use tara::app::coordination::{CoordOp, decode_result};
//!
//! let mut client = tara::client::connect(&["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"])?;
//! let answer = client.invoke(CoordOp::GetChildren { path: "/".into() }.encode())?;
//! println!("{:?}", decode_result(&answer)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::{Client, ClientError, ClientOptions, ClientPool, Refusal, Replies, Transport};
use crate::net::wire::{ClientFrame, ClusterInfo, FrameReader, MAX_FRAME_BYTES, ReplicaStatus, ServerFrame, encode};
use crate::protocol::Command;

/// How long connecting to one front end may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// An open connection: the write half here, a reader thread feeding the mailbox.
struct Connection {
    stream: TcpStream,
    alive: Arc<AtomicBool>,
    /// The front end's last refusal of a command (its cluster is stopping, say): commands go
    /// to other front ends while this connection lasts.
    rejected: Arc<Mutex<Option<String>>>,
}

/// Commands a transport holds back before it writes them, even if the pool does not flush:
/// the commands a pool submits together go to each front end in one write.
pub const HELD_COMMANDS_MAX: usize = 64;

/// Reaches a cluster through its front ends; one connection per front end, opened on demand and
/// reopened after it breaks.
pub struct TcpTransport {
    addrs: Vec<SocketAddr>,
    connections: Vec<Option<Connection>>,
    mailbox: Option<Sender<Replies>>,
    /// Refusals, as the reader threads receive them, for the pool.
    refusals: (Sender<Refusal>, Receiver<Refusal>),
    /// Per front end: the frames of the commands submitted for it and not yet written.
    held: Vec<Vec<u8>>,
    held_count: usize,
    /// What the cluster said of the front ends, once one described it.
    shape: Option<Shape>,
    /// When a front end was last asked to describe the cluster.
    asked: Option<std::time::Instant>,
}

/// How often a transport that could not learn the cluster's shape asks again.
const DESCRIBE_AGAIN: Duration = Duration::from_secs(5);

/// The cluster's partitions, and per address of the transport the partitions whose commands
/// its front end hands to a request source of its own process (the others it forwards).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Shape {
    partitions: u64,
    direct: Vec<Vec<u32>>,
}

impl Shape {
    /// The shape `info` describes, for the front ends at `addrs` (one the cluster does not list
    /// takes nothing directly).
    fn of(info: &ClusterInfo, addrs: &[SocketAddr]) -> Shape {
        let direct = addrs
            .iter()
            .map(|addr| {
                let listed =
                    info.front_ends.iter().position(|f| f.to_socket_addrs().is_ok_and(|mut a| a.any(|a| a == *addr)));
                listed.and_then(|i| info.direct.get(i).cloned()).unwrap_or_default()
            })
            .collect();
        Shape { partitions: info.partitions.max(1) as u64, direct }
    }

    /// The front ends to try for `client`'s command sent through `route`: those that take its
    /// partition directly, then the others, each group starting at its `route`-th.
    fn order(&self, route: usize, client: u64) -> Vec<usize> {
        let partition = (client % self.partitions) as u32;
        let (direct, forwarding): (Vec<usize>, Vec<usize>) =
            (0..self.direct.len()).partition(|i| self.direct[*i].contains(&partition));
        let rotated = |group: &[usize]| (0..group.len()).map(|k| group[(route + k) % group.len()]).collect::<Vec<_>>();
        [rotated(&direct), rotated(&forwarding)].concat()
    }
}

impl TcpTransport {
    /// A transport to the front ends at `addrs` (each `host:port`).
    pub fn new<A: ToSocketAddrs + std::fmt::Debug>(addrs: &[A]) -> Result<TcpTransport, ClientError> {
        let mut resolved = Vec::new();
        for addr in addrs {
            let mut found = addr.to_socket_addrs().map_err(|e| ClientError::Unreachable(format!("{addr:?}: {e}")))?;
            resolved
                .push(found.next().ok_or_else(|| ClientError::Unreachable(format!("{addr:?} resolves to nothing")))?);
        }
        if resolved.is_empty() {
            return Err(ClientError::Unreachable("no front-end address given".into()));
        }
        let connections = resolved.iter().map(|_| None).collect();
        let held = resolved.iter().map(|_| Vec::new()).collect();
        let refusals = crossbeam_channel::unbounded();
        let (shape, asked) = (None, None);
        Ok(TcpTransport { addrs: resolved, connections, mailbox: None, refusals, held, held_count: 0, shape, asked })
    }

    /// The connection to front end `route`, opened if needed.
    fn connection(&mut self, route: usize) -> io::Result<&mut Connection> {
        let alive = self.connections[route].as_ref().is_some_and(|c| c.alive.load(Ordering::Acquire));
        if !alive {
            let stream = TcpStream::connect_timeout(&self.addrs[route], CONNECT_TIMEOUT)?;
            stream.set_nodelay(true)?;
            let alive = Arc::new(AtomicBool::new(true));
            let rejected = Arc::new(Mutex::new(None));
            let reader = stream.try_clone()?;
            let sinks = Sinks {
                mailbox: self.mailbox.clone(),
                replies: Vec::new(),
                alive: alive.clone(),
                rejected: rejected.clone(),
                refusals: self.refusals.0.clone(),
                addr: self.addrs[route],
            };
            std::thread::Builder::new()
                .name(format!("tara-client-{}", self.addrs[route]))
                .spawn(move || read_replies(reader, sinks))?;
            self.connections[route] = Some(Connection { stream, alive, rejected });
        }
        self.connections[route].as_mut().ok_or_else(|| io::Error::other("no connection"))
    }
}

/// Where a connection's reader thread puts what it receives.
struct Sinks {
    mailbox: Option<Sender<Replies>>,
    /// Replies of the frames read so far, sent to the mailbox together.
    replies: Replies,
    alive: Arc<AtomicBool>,
    rejected: Arc<Mutex<Option<String>>>,
    refusals: Sender<Refusal>,
    addr: SocketAddr,
}

impl Sinks {
    fn take(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::Reply(reply) => self.replies.push(reply),
            ServerFrame::Refused { client, timestamp, message } => {
                let message = format!("{}: {message}", self.addr);
                tracing::info!("front end refused a command: {message}");
                if let Ok(mut slot) = self.rejected.lock() {
                    *slot = Some(message.clone());
                }
                let _ = self.refusals.send(Refusal { client, timestamp, message });
            }
            // The front end closes the connection after it: the reader sees it end.
            ServerFrame::Error(message) => tracing::warn!("front end {} rejected a frame: {message}", self.addr),
            // Busy is back-pressure, not a fault: the command stays pending, and the pool sends
            // it again after its retry timeout, through the next front end (a busy connection
            // is closed by its front end and reopened on demand).
            ServerFrame::Busy { command, message } => {
                tracing::warn!("front end {} is busy ({command:?}): {message}", self.addr);
            }
            ServerFrame::Status(_) | ServerFrame::Cluster(_) | ServerFrame::Counters(_) => {}
        }
    }

    /// Hands the replies taken so far to the mailbox, as one batch.
    fn deliver(&mut self) {
        if let (false, Some(mailbox)) = (self.replies.is_empty(), &self.mailbox) {
            let _ = mailbox.send(std::mem::take(&mut self.replies));
        }
    }
}

/// Feeds replies from one connection into the mailbox (the replies of one read together), and
/// refusals to the pool, until it breaks.
fn read_replies(mut stream: TcpStream, mut sinks: Sinks) {
    let mut reader = FrameReader::new(MAX_FRAME_BYTES);
    let mut buffer = [0u8; 16 * 1024];
    while sinks.alive.load(Ordering::Acquire) {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => reader.extend(&buffer[..n]),
        }
        while let Some(frame) = reader.next_frame::<ServerFrame>() {
            match frame {
                Ok(frame) => sinks.take(frame),
                Err(e) => {
                    tracing::warn!("bad frame from the front end: {e}");
                    sinks.alive.store(false, Ordering::Release);
                }
            }
        }
        sinks.deliver();
    }
    sinks.alive.store(false, Ordering::Release);
}

impl TcpTransport {
    /// The cluster's shape, asked of the front ends the first time (and again every
    /// [`DESCRIBE_AGAIN`] while none answers).
    fn shape(&mut self) -> Option<&Shape> {
        let due = self.asked.is_none_or(|at| self.shape.is_none() && at.elapsed() >= DESCRIBE_AGAIN);
        if due {
            self.asked = Some(std::time::Instant::now());
            let described = self.addrs.iter().find_map(|addr| describe(&addr.to_string(), CONNECT_TIMEOUT).ok());
            self.shape = described.map(|info| Shape::of(&info, &self.addrs));
        }
        self.shape.as_ref()
    }

    /// Writes encoded `frames` to front end `route` in one write; a connection that fails is
    /// closed (and reopened by the next write).
    fn write(&mut self, route: usize, frames: &[u8]) -> io::Result<()> {
        let written = self.connection(route).and_then(|c| c.stream.write_all(frames));
        if written.is_err()
            && let Some(connection) = self.connections[route].take()
        {
            connection.alive.store(false, Ordering::Release);
            let _ = connection.stream.shutdown(std::net::Shutdown::Both);
        }
        written
    }

    /// The error frame front end `route` answered on its open connection, if any.
    fn rejection(&self, route: usize) -> Option<String> {
        let connection = self.connections[route].as_ref().filter(|c| c.alive.load(Ordering::Acquire))?;
        connection.rejected.lock().ok()?.clone()
    }
}

impl Transport for TcpTransport {
    fn routes(&self) -> u32 {
        self.addrs.len() as u32
    }

    fn new_client_id(&mut self) -> u64 {
        // Ids must be unique for the cluster's whole life, across client processes: random,
        // nonzero, and spread over every residue mod P (partition = client mod P, Section IV).
        loop {
            let id = rand::random::<u64>();
            if id != 0 {
                return id;
            }
        }
    }

    fn register(&mut self, _client: u64, mailbox: &Sender<Replies>) {
        self.mailbox = Some(mailbox.clone());
    }

    fn unregister(&mut self, _client: u64) {}

    /// Holds `command` for the first front end from `route` on that has not refused a command
    /// on its open connection, preferring those that take its partition directly; fails at
    /// once if every one has refused.
    fn submit(&mut self, route: u32, command: Command) -> Result<(), ClientError> {
        let routes = self.addrs.len();
        let order: Vec<usize> = match self.shape() {
            Some(shape) => shape.order(route as usize, command.client),
            None => (0..routes).map(|attempt| (route as usize + attempt) % routes).collect(),
        };
        let open = order.into_iter().find(|r| self.rejection(*r).is_none());
        let Some(route) = open else {
            // Every front end refused: waiting for the retry timeout would not change that.
            let last = self.rejection(route as usize % routes).unwrap_or_default();
            return Err(ClientError::Refused(last));
        };
        self.held[route].extend_from_slice(&encode(&ClientFrame::Submit(command)));
        self.held_count += 1;
        if self.held_count >= HELD_COMMANDS_MAX {
            return self.flush();
        }
        Ok(())
    }

    /// Writes the held commands, each front end's in one write; the commands of a front end
    /// that cannot be reached go to the next one.
    fn flush(&mut self) -> Result<(), ClientError> {
        let mut unsent = None;
        for route in 0..self.addrs.len() {
            let frames = std::mem::take(&mut self.held[route]);
            if frames.is_empty() {
                continue;
            }
            let mut why = String::new();
            let routes = self.addrs.len();
            let taken = (0..routes).map(|attempt| (route + attempt) % routes).any(|target| {
                let written = self.write(target, &frames);
                if let Err(e) = &written {
                    why = format!("{}: {e}", self.addrs[target]);
                }
                written.is_ok()
            });
            // Frames no front end took are dropped: the pool sends their commands again after
            // the retry timeout, as for any command that could not be sent.
            if !taken {
                unsent = Some(why);
            }
        }
        self.held_count = 0;
        unsent.map_or(Ok(()), |why| Err(ClientError::Unreachable(why)))
    }

    fn stopped(&self) -> bool {
        false
    }

    fn refusals(&self) -> Option<Receiver<Refusal>> {
        Some(self.refusals.1.clone())
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        for connection in self.connections.iter_mut().flatten() {
            connection.alive.store(false, Ordering::Release);
            let _ = connection.stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A pool of clients reaching the front ends at `addrs`.
pub fn pool<A: ToSocketAddrs + std::fmt::Debug>(
    addrs: &[A],
    options: ClientOptions,
) -> Result<ClientPool, ClientError> {
    let transport = TcpTransport::new(addrs)?;
    Ok(ClientPool::new(Box::new(transport), options, crossbeam_channel::unbounded()))
}

/// One client reaching the front ends at `addrs`, with default options.
pub fn connect<A: ToSocketAddrs + std::fmt::Debug>(addrs: &[A]) -> Result<Client, ClientError> {
    Ok(Client::new(pool(addrs, ClientOptions::default())?))
}

/// The counters and bounds of the front end at `addr`.
pub fn counters(addr: &str, timeout: Duration) -> Result<crate::net::FrontEndCounters, ClientError> {
    ask(addr, &ClientFrame::Counters, timeout, |frame| match frame {
        ServerFrame::Counters(counters) => Some(counters),
        _ => None,
    })
}

/// The counters of the replicas hosted by the process behind the front end at `addr`.
pub fn status(addr: &str, timeout: Duration) -> Result<Vec<ReplicaStatus>, ClientError> {
    ask(addr, &ClientFrame::Status, timeout, |frame| match frame {
        ServerFrame::Status(status) => Some(status),
        _ => None,
    })
}

/// The cluster behind the front end at `addr`, as it describes itself: its shape, its clients'
/// retry timeout, and every process's front end.
pub fn describe(addr: &str, timeout: Duration) -> Result<ClusterInfo, ClientError> {
    ask(addr, &ClientFrame::Describe, timeout, |frame| match frame {
        ServerFrame::Cluster(cluster) => Some(cluster),
        _ => None,
    })
}

/// Sends `question` on a new connection to `addr` and waits for the frame `answer` accepts.
fn ask<T>(
    addr: &str,
    question: &ClientFrame,
    timeout: Duration,
    answer: impl Fn(ServerFrame) -> Option<T>,
) -> Result<T, ClientError> {
    let unreachable = |e: io::Error| ClientError::Unreachable(format!("{addr}: {e}"));
    let target = addr.to_socket_addrs().map_err(unreachable)?.next();
    let target = target.ok_or_else(|| ClientError::Unreachable(format!("{addr} resolves to nothing")))?;
    let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(unreachable)?;
    stream.set_read_timeout(Some(timeout)).map_err(unreachable)?;
    stream.write_all(&encode(question)).map_err(unreachable)?;
    let mut reader = FrameReader::new(MAX_FRAME_BYTES);
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match reader.next_frame::<ServerFrame>() {
            Some(Ok(ServerFrame::Error(message))) => {
                return Err(ClientError::Unreachable(format!("{addr}: {message}")));
            }
            Some(Ok(frame)) => {
                if let Some(found) = answer(frame) {
                    return Ok(found);
                }
                continue;
            }
            Some(Err(e)) => return Err(ClientError::Unreachable(e.to_string())),
            None => {}
        }
        let n = stream.read(&mut buffer).map_err(unreachable)?;
        if n == 0 {
            return Err(ClientError::Unreachable(format!("{addr} closed the connection")));
        }
        reader.extend(&buffer[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(front_ends: &[&str], direct: Vec<Vec<u32>>, partitions: usize) -> ClusterInfo {
        ClusterInfo {
            f: 1,
            partitions,
            workers: 1,
            batch_size: 64,
            window: 1024,
            checkpoint_interval: 512,
            client_window: 64,
            retry_timeout_ms: 500,
            front_ends: front_ends.iter().map(|f| f.to_string()).collect(),
            direct,
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    /// Commands go to the front ends that hand them to a source of their own process, spread
    /// over them by route; the forwarding ones come after, for failover.
    #[test]
    fn direct_front_ends_come_first() {
        let all = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"];
        let shape = Shape::of(&info(&all, vec![vec![], vec![0], vec![0]], 1), &addrs(&all));
        let orders: Vec<Vec<usize>> = (0..3).map(|route| shape.order(route, 7)).collect();
        assert_eq!(orders, vec![vec![1, 2, 0], vec![2, 1, 0], vec![1, 2, 0]]);
    }

    /// With partitions, a client's partition decides which front ends are direct; an address
    /// the cluster does not list is tried last.
    #[test]
    fn the_client_partition_picks_the_direct_front_ends() {
        let listed = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"];
        let shape = Shape::of(
            &info(&listed, vec![vec![0], vec![1], vec![0, 1]], 2),
            &addrs(&["127.0.0.1:2", "127.0.0.1:9", "127.0.0.1:3"]),
        );
        assert_eq!(shape.direct, vec![vec![1], vec![], vec![0, 1]]);
        assert_eq!(shape.order(0, 4), vec![2, 0, 1], "partition 0: only the third takes it directly");
        assert_eq!(shape.order(1, 5), vec![2, 0, 1], "partition 1: the first and the third");
        assert_eq!(shape.order(0, 5), vec![0, 2, 1]);
    }
}
