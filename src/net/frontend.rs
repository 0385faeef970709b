//! The client front end of one process: a TCP server on one event-loop thread.
//!
//! Clients send [`ClientFrame`]s; each submitted command goes to a request source of its
//! client's partition, one this process hosts if there is one; otherwise the front end forwards
//! it through the dataflow to one on another process. Either way the first executor reply comes
//! back on the connection that submitted it, so every front end is a way in. A bad frame gets an
//! error frame and closes its connection only; a command this front end cannot take (the cluster
//! is stopping) gets a [`ServerFrame::Refused`], so that its client tries another at once.
//!
//! Every buffer is bounded ([`Limits`]): connections per front end, commands outstanding per
//! connection and bytes buffered per connection. Over a bound the client gets a
//! [`ServerFrame::Busy`] naming it, or (bytes) the front end stops reading from that connection
//! until its client has read what was sent to it; other connections are not affected. The
//! ingress queues into the dataflow hold only commands that some connection awaits, so they
//! hold at most `max_connections × max_outstanding` commands.
//!
//! A reply for `(client, timestamp)` goes only to the connections that submitted that command
//! (a client that fails over resubmits it on another one), never to another connection that
//! merely claims the same client id.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::wire::{ClientFrame, ClusterInfo, FrameReader, FrontEndCounters, ReplicaStatus, ServerFrame, encode};
use crate::dataflow::egress::Replies;
use crate::dataflow::{Control, Ingress, Mailboxes, ReplicaStats, Stage};
use crate::protocol::topology;
use crate::protocol::{Command, Params, Reply};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Why a front end refuses commands once its dataflow is stopping.
const STOPPING: &str = "the cluster is stopping; this front end takes no more commands";

/// The bounds of one front end, each a key of the cluster's description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once (`max_connections`); one more gets [`ServerFrame::Busy`] and
    /// is closed.
    pub max_connections: usize,
    /// Commands awaiting their reply per connection (`max_outstanding`); one more gets
    /// [`ServerFrame::Busy`] and is not submitted.
    pub max_outstanding: usize,
    /// Bytes buffered per connection, received and to send (`max_connection_bytes`). The front
    /// end reads from a connection only while it holds less than half of this; a client that
    /// does not read its replies, so that one more would pass the bound, is disconnected.
    pub max_connection_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_connections: 4096, max_outstanding: 4096, max_connection_bytes: 2 << 20 }
    }
}

impl Limits {
    /// Checks the bounds against the largest frame accepted; the error names the key and the fix.
    ///
    /// ```
    /// use tara::net::Limits;
    /// assert!(Limits::default().validate(1 << 20).is_ok());
    /// let small = Limits { max_connection_bytes: 1 << 20, ..Limits::default() };
    /// assert!(small.validate(1 << 20).unwrap_err().contains("max_connection_bytes"));
    /// ```
    pub fn validate(&self, max_frame_bytes: usize) -> Result<(), String> {
        if self.max_connections == 0 || self.max_outstanding == 0 {
            return Err("`max_connections` and `max_outstanding`: must be at least 1".into());
        }
        // Half of the bound is for input, which must fit one whole frame; the rest for replies.
        if self.max_connection_bytes < 2 * max_frame_bytes {
            return Err(format!(
                "`max_connection_bytes`: must be at least twice `max_frame_bytes` ({}), got {}",
                2 * max_frame_bytes,
                self.max_connection_bytes
            ));
        }
        Ok(())
    }
}

/// What a front end serves.
pub struct FrontEndConfig {
    /// The request sources this process hosts; a client's commands go to one of them, in the
    /// client's partition.
    pub sources: Vec<u32>,
    /// The deployment's parameters (which partition each client and source belongs to).
    pub params: Params,
    /// The replicas this process hosts, for status requests.
    pub replicas: Vec<(Stage, u32)>,
    /// The largest frame accepted.
    pub max_frame_bytes: usize,
    /// The worker of this process whose ingress forwards commands to request sources elsewhere
    /// ([`Ingress::forward`]); `None`: commands without a local source are refused.
    pub forward_through: Option<u32>,
    /// What [`ClientFrame::Describe`] answers, if known.
    pub cluster: Option<ClusterInfo>,
    /// The bounds on connections, outstanding commands and buffered bytes.
    pub limits: Limits,
}

/// A running front end.
pub struct FrontEnd {
    /// The address it listens on.
    pub addr: SocketAddr,
    handle: Option<JoinHandle<()>>,
    waker: Arc<Waker>,
    done: Arc<AtomicBool>,
}

impl FrontEnd {
    /// Stops the front end and waits for it. Until then it serves status requests and, once the
    /// dataflow's control is stopped, refuses commands (so that clients go elsewhere at once).
    pub fn join(self) {
        drop(self);
    }
}

impl Drop for FrontEnd {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Serves clients on `listener` until `control` is stopped.
pub fn spawn(
    listener: std::net::TcpListener,
    ingress: Arc<Ingress>,
    mailboxes: Arc<Mailboxes>,
    control: Arc<Control>,
    config: FrontEndConfig,
) -> io::Result<FrontEnd> {
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let mut listener = TcpListener::from_std(listener);
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let (replies_tx, replies) = crossbeam_channel::unbounded();
    let wake = waker.clone();
    let notify: Arc<dyn Fn() + Send + Sync> = Arc::new(move || drop(wake.wake()));
    let done = Arc::new(AtomicBool::new(false));
    let mut server = Server {
        done: done.clone(),
        forwarded: 0,
        poll,
        listener,
        connections: HashMap::new(),
        next_token: 2,
        awaiting: HashMap::new(),
        clients: HashMap::new(),
        counters: FrontEndCounters::default(),
        ingress,
        mailboxes,
        control,
        config,
        replies,
        replies_tx,
        notify,
    };
    let handle = std::thread::Builder::new().name(format!("tara-frontend-{addr}")).spawn(move || server.run())?;
    Ok(FrontEnd { addr, handle: Some(handle), waker, done })
}

struct Connection {
    stream: TcpStream,
    reader: FrameReader,
    out: Vec<u8>,
    closing: bool,
    /// Commands of this connection awaiting their reply.
    outstanding: usize,
}

impl Connection {
    fn buffered(&self) -> usize {
        self.reader.buffered() + self.out.len()
    }
}

struct Server {
    done: Arc<AtomicBool>,
    /// Commands forwarded so far: spreads them over the request sources of a partition.
    forwarded: u32,
    poll: Poll,
    listener: TcpListener,
    connections: HashMap<Token, Connection>,
    next_token: usize,
    /// Commands waiting for their first reply, and the connections that submitted them (more
    /// than one if a client resubmitted a command on another connection).
    awaiting: HashMap<(u64, u64), Awaiting>,
    /// Per client: its entries in `awaiting`; its mailbox is registered while there are any.
    clients: HashMap<u64, usize>,
    counters: FrontEndCounters,
    ingress: Arc<Ingress>,
    mailboxes: Arc<Mailboxes>,
    control: Arc<Control>,
    config: FrontEndConfig,
    replies: Receiver<Replies>,
    replies_tx: Sender<Replies>,
    notify: Arc<dyn Fn() + Send + Sync>,
}

/// One command waiting for its first reply.
struct Awaiting {
    /// When a connection first submitted it (its latency counts from here).
    since: Instant,
    /// The connections to answer.
    tokens: Vec<Token>,
}

impl Server {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        while !self.done.load(Ordering::Acquire) {
            if let Err(e) = self.poll.poll(&mut events, Some(Duration::from_millis(100)))
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!("front end: poll failed: {e}");
                return;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    token => self.serve(token, event.is_readable(), event.is_writable()),
                }
            }
            // The commands of every connection read in this round enter the dataflow together.
            if let Err(e) = self.ingress.wake_queued() {
                tracing::debug!("front end: {e}");
            }
            self.deliver_replies();
            if self.control.stopped() {
                self.refuse_awaiting();
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) if self.connections.len() >= self.config.limits.max_connections => {
                    self.counters.refused_connections += 1;
                    let message = format!(
                        "busy: this front end serves its limit of {} connections (`max_connections`); \
                         try another front end or later",
                        self.config.limits.max_connections
                    );
                    // Best effort on a fresh socket; the connection closes either way.
                    let _ = stream.write_all(&encode(&ServerFrame::Busy { command: None, message }));
                }
                Ok((mut stream, _)) => {
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    let _ = stream.set_nodelay(true);
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self.poll.registry().register(&mut stream, token, interest).is_ok() {
                        let reader = FrameReader::new(self.config.max_frame_bytes);
                        self.connections.insert(
                            token,
                            Connection { stream, reader, out: Vec::new(), closing: false, outstanding: 0 },
                        );
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("front end: accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn serve(&mut self, token: Token, readable: bool, writable: bool) {
        if (readable || writable) && !self.read(token) {
            self.close(token);
            return;
        }
        self.flush(token);
        // Flushing made room: read what waits (reading may have paused at the byte bound).
        if writable && !self.read(token) {
            self.close(token);
        }
    }

    /// Reads what is available, while the connection holds less than half of its byte bound,
    /// and handles every complete frame; false if the peer is gone. When the bound stops it,
    /// the kernel's buffers fill and the client's writes block: TCP's own backpressure.
    fn read(&mut self, token: Token) -> bool {
        let room_for = self.config.limits.max_connection_bytes / 2;
        let mut buffer = [0u8; 16 * 1024];
        loop {
            self.handle_frames(token);
            let Some(connection) = self.connections.get_mut(&token) else { return false };
            let room = room_for.saturating_sub(connection.buffered()).min(buffer.len());
            if room == 0 || connection.closing {
                return true;
            }
            match connection.stream.read(&mut buffer[..room]) {
                Ok(0) => return false,
                Ok(n) => {
                    connection.reader.extend(&buffer[..n]);
                    self.note_buffered(token);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }

    /// Handles the complete frames received, while what this connection has to send stays
    /// under half of its byte bound (the rest waits until its client reads).
    fn handle_frames(&mut self, token: Token) {
        let room_for = self.config.limits.max_connection_bytes / 2;
        while let Some(connection) = self.connections.get_mut(&token).filter(|c| !c.closing && c.out.len() < room_for) {
            match connection.reader.next_frame::<ClientFrame>() {
                None => break,
                Some(Ok(frame)) => self.handle(token, frame),
                Some(Err(e)) => {
                    tracing::warn!("front end: rejected a frame: {e}");
                    self.queue(token, &ServerFrame::Error(e.to_string()));
                    if let Some(connection) = self.connections.get_mut(&token) {
                        connection.closing = true;
                    }
                }
            }
        }
    }

    /// Keeps the high-water mark of one connection's buffered bytes.
    fn note_buffered(&mut self, token: Token) {
        if let Some(connection) = self.connections.get(&token) {
            let bytes = connection.buffered() as u64;
            self.counters.peak_connection_bytes = self.counters.peak_connection_bytes.max(bytes);
        }
    }

    fn handle(&mut self, token: Token, frame: ClientFrame) {
        match frame {
            ClientFrame::Submit(command) => self.submit(token, command),
            ClientFrame::Status => {
                let status = self.status();
                self.queue(token, &ServerFrame::Status(status));
            }
            ClientFrame::Counters => {
                let counters = self.counters();
                self.queue(token, &ServerFrame::Counters(counters));
            }
            ClientFrame::Describe => {
                let frame = match &self.config.cluster {
                    Some(cluster) => ServerFrame::Cluster(cluster.clone()),
                    None => ServerFrame::Error("this front end does not know its cluster's description".into()),
                };
                self.queue(token, &frame);
            }
        }
    }

    fn submit(&mut self, token: Token, mut command: Command) {
        // Only a front end says where replies go.
        command.origin = None;
        let key = (command.client, command.timestamp);
        if self.control.stopped() {
            return self.refuse(token, key.0, key.1, STOPPING.into());
        }
        let again = self.awaiting.get(&key).is_some_and(|waiting| waiting.tokens.contains(&token));
        if !again && !self.await_reply(token, key) {
            self.counters.busy += 1;
            let message = format!(
                "busy: this connection has its limit of {} commands awaiting replies (`max_outstanding`); \
                 send it again once some are answered",
                self.config.limits.max_outstanding
            );
            return self.queue(token, &ServerFrame::Busy { command: Some(key), message });
        }
        match self.enter(command) {
            Ok(()) => self.counters.submitted += 1,
            Err(message) => {
                self.forget(token, key);
                self.refuse(token, key.0, key.1, message);
            }
        }
    }

    /// Notes that `token` awaits the reply to `key`; false if that connection is at its bound.
    fn await_reply(&mut self, token: Token, key: (u64, u64)) -> bool {
        let Some(connection) = self.connections.get_mut(&token) else { return false };
        if connection.outstanding >= self.config.limits.max_outstanding {
            return false;
        }
        connection.outstanding += 1;
        self.awaiting
            .entry(key)
            .or_insert_with(|| Awaiting { since: Instant::now(), tokens: Vec::new() })
            .tokens
            .push(token);
        let entries = self.clients.entry(key.0).or_insert(0);
        *entries += 1;
        if *entries == 1 {
            self.mailboxes.register_with_notify(key.0, self.replies_tx.clone(), self.notify.clone());
        }
        true
    }

    /// Undoes [`Server::await_reply`] for one connection.
    fn forget(&mut self, token: Token, key: (u64, u64)) {
        if let Some(waiting) = self.awaiting.get_mut(&key)
            && let Some(at) = waiting.tokens.iter().position(|t| *t == token)
        {
            waiting.tokens.swap_remove(at);
            if waiting.tokens.is_empty() {
                self.awaiting.remove(&key);
            }
            self.released(token, key.0);
        }
    }

    /// One entry of `token` for `client` left `awaiting`.
    fn released(&mut self, token: Token, client: u64) {
        if let Some(connection) = self.connections.get_mut(&token) {
            assert!(connection.outstanding > 0, "a connection's outstanding count matches `awaiting`");
            connection.outstanding -= 1;
        }
        if let Some(entries) = self.clients.get_mut(&client) {
            *entries -= 1;
            if *entries == 0 {
                self.clients.remove(&client);
                self.mailboxes.unregister(client);
            }
        }
    }

    /// Hands `command` to a request source of its client's partition: one this process hosts,
    /// or else one elsewhere, through the forwarding worker.
    fn enter(&mut self, command: Command) -> Result<(), String> {
        let params = &self.config.params;
        let partition = topology::partition_of_client(command.client, params);
        let ours: Vec<u32> = (self.config.sources.iter().copied())
            .filter(|s| topology::locate(Stage::Source, *s, params).0 == partition)
            .collect();
        if !ours.is_empty() {
            let source = ours[(command.client / params.partitions as u64 % ours.len() as u64) as usize];
            return self.ingress.submit_quietly(source, command).map_err(|e| e.to_string());
        }
        let Some(worker) = self.config.forward_through else {
            return Err(format!(
                "this process hosts no request source of partition {partition}, which orders client {}'s \
                 commands, and forwards none",
                command.client
            ));
        };
        self.forwarded = self.forwarded.wrapping_add(1);
        let source = topology::source_of(command.client, self.forwarded, params);
        self.ingress.forward(worker, source, command).map_err(|e| e.to_string())
    }

    fn refuse(&mut self, token: Token, client: u64, timestamp: u64, message: String) {
        self.queue(token, &ServerFrame::Refused { client, timestamp, message });
    }

    /// Once the dataflow stops, the commands still waiting here will not be answered: say so, so
    /// that their clients go elsewhere now rather than after their retry timeout.
    fn refuse_awaiting(&mut self) {
        let awaiting: Vec<((u64, u64), Awaiting)> = self.awaiting.drain().collect();
        for ((client, timestamp), waiting) in awaiting {
            for token in waiting.tokens {
                self.released(token, client);
                self.refuse(token, client, timestamp, STOPPING.into());
            }
        }
    }

    fn status(&self) -> Vec<ReplicaStatus> {
        let get = ReplicaStats::get;
        let status = |(stage, replica): &(Stage, u32)| {
            let s = self.control.stats(*stage, *replica)?;
            Some(ReplicaStatus {
                stage: stage.name().to_string(),
                replica: *replica,
                next: get(&s.next),
                executed: get(&s.count),
                view: get(&s.view),
                stable: get(&s.stable),
                history: get(&s.history),
                held: get(&s.held),
                down: s.is_down(),
                partition: topology::locate(*stage, *replica, &self.config.params).0,
                restarts: s.generation(),
            })
        };
        self.config.replicas.iter().filter_map(status).collect()
    }

    fn counters(&self) -> FrontEndCounters {
        let limits = &self.config.limits;
        let connections = self.connections.values();
        FrontEndCounters {
            connections: self.connections.len() as u64,
            max_connections: limits.max_connections as u64,
            outstanding: self.connections.values().map(|c| c.outstanding as u64).sum(),
            max_outstanding: limits.max_outstanding as u64,
            buffered_bytes: connections.map(|c| c.buffered() as u64).sum(),
            max_connection_bytes: limits.max_connection_bytes as u64,
            ..self.counters.clone()
        }
    }

    /// Sends each reply to the connections that submitted its command, and to no other; each
    /// connection's replies of this round go out in one write.
    fn deliver_replies(&mut self) {
        let replies: Vec<Reply> = self.replies.try_iter().flatten().collect();
        let mut written: Vec<Token> = Vec::new();
        for reply in replies {
            let Some(waiting) = self.awaiting.remove(&(reply.client, reply.timestamp)) else { continue };
            let micros = u64::try_from(waiting.since.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.counters.observe_latency(micros);
            let frame = encode(&ServerFrame::Reply(reply.clone()));
            for token in waiting.tokens {
                self.released(token, reply.client);
                self.counters.replied += 1;
                self.buffer(token, &frame);
                written.push(token);
            }
        }
        written.sort_unstable();
        written.dedup();
        for token in written {
            self.flush(token);
        }
    }

    fn queue(&mut self, token: Token, frame: &ServerFrame) {
        self.queue_bytes(token, &encode(frame));
    }

    /// Queues an encoded frame and writes what the socket takes.
    fn queue_bytes(&mut self, token: Token, frame: &[u8]) {
        self.buffer(token, frame);
        self.flush(token);
    }

    /// Queues an encoded frame; a connection whose client reads so little that the frame would
    /// pass its byte bound is closed (its commands can be resubmitted elsewhere).
    fn buffer(&mut self, token: Token, frame: &[u8]) {
        let bound = self.config.limits.max_connection_bytes;
        let Some(connection) = self.connections.get_mut(&token) else { return };
        if connection.buffered() + frame.len() > bound {
            self.counters.overruns += 1;
            tracing::warn!(
                "front end: closed a connection that does not read its replies (`max_connection_bytes` = {bound})"
            );
            return self.close(token);
        }
        connection.out.extend_from_slice(frame);
        self.note_buffered(token);
    }

    /// Writes what the socket takes; closes a connection marked closing once it is flushed.
    fn flush(&mut self, token: Token) {
        let Some(connection) = self.connections.get_mut(&token) else { return };
        while !connection.out.is_empty() {
            match connection.stream.write(&connection.out) {
                Ok(0) => break,
                Ok(n) => {
                    connection.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(token);
                    return;
                }
            }
        }
        if connection.closing && connection.out.is_empty() {
            self.close(token);
        }
    }

    fn close(&mut self, token: Token) {
        if let Some(mut connection) = self.connections.remove(&token) {
            let _ = self.poll.registry().deregister(&mut connection.stream);
        }
        let mut released = Vec::new();
        self.awaiting.retain(|(client, _), waiting| {
            let before = waiting.tokens.len();
            waiting.tokens.retain(|t| *t != token);
            released.extend(std::iter::repeat_n(*client, before - waiting.tokens.len()));
            !waiting.tokens.is_empty()
        });
        for client in released {
            self.released(token, client);
        }
    }
}
