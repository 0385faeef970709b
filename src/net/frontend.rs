//! The client front end of one process: a TCP server on one event-loop thread.
//!
//! Clients send [`ClientFrame`]s; each submitted command goes to a request source of its
//! client's partition, one this process hosts if there is one; otherwise the front end forwards
//! it through the dataflow to one on another process. Either way the first executor reply comes
//! back on the connection that submitted it, so every front end is a way in. A bad frame gets an
//! error frame and closes its connection only; a command this front end cannot take (the cluster
//! is stopping) gets a [`ServerFrame::Refused`], so that its client tries another at once.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::wire::{ClientFrame, ClusterInfo, FrameReader, ReplicaStatus, ServerFrame, encode};
use crate::dataflow::{Control, Ingress, Mailboxes, ReplicaStats, Stage};
use crate::protocol::topology;
use crate::protocol::{Command, Params, Reply};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Why a front end refuses commands once its dataflow is stopping.
const STOPPING: &str = "the cluster is stopping; this front end takes no more commands";

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
}

struct Server {
    done: Arc<AtomicBool>,
    /// Commands forwarded so far: spreads them over the request sources of a partition.
    forwarded: u32,
    poll: Poll,
    listener: TcpListener,
    connections: HashMap<Token, Connection>,
    next_token: usize,
    /// Commands waiting for their first reply, and the connection that submitted them.
    awaiting: HashMap<(u64, u64), Token>,
    /// The connection each client last used.
    clients: HashMap<u64, Token>,
    ingress: Arc<Ingress>,
    mailboxes: Arc<Mailboxes>,
    control: Arc<Control>,
    config: FrontEndConfig,
    replies: Receiver<Reply>,
    replies_tx: Sender<Reply>,
    notify: Arc<dyn Fn() + Send + Sync>,
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
            self.deliver_replies();
            if self.control.stopped() {
                self.refuse_awaiting();
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    let _ = stream.set_nodelay(true);
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self.poll.registry().register(&mut stream, token, interest).is_ok() {
                        let reader = FrameReader::new(self.config.max_frame_bytes);
                        self.connections.insert(token, Connection { stream, reader, out: Vec::new(), closing: false });
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
        if readable && !self.read(token) {
            self.close(token);
            return;
        }
        if writable || readable {
            self.flush(token);
        }
    }

    /// Reads what is available and handles every complete frame; false if the peer is gone.
    fn read(&mut self, token: Token) -> bool {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let Some(connection) = self.connections.get_mut(&token) else { return false };
            match connection.stream.read(&mut buffer) {
                Ok(0) => return false,
                Ok(n) => connection.reader.extend(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        while let Some(connection) = self.connections.get_mut(&token).filter(|c| !c.closing) {
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
        true
    }

    fn handle(&mut self, token: Token, frame: ClientFrame) {
        match frame {
            ClientFrame::Submit(command) => self.submit(token, command),
            ClientFrame::Status => {
                let status = self.status();
                self.queue(token, &ServerFrame::Status(status));
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
        let (client, timestamp) = (command.client, command.timestamp);
        if self.control.stopped() {
            return self.refuse(token, client, timestamp, STOPPING.into());
        }
        if self.clients.insert(client, token).is_none() {
            self.mailboxes.register_with_notify(client, self.replies_tx.clone(), self.notify.clone());
        }
        self.awaiting.insert((client, timestamp), token);
        if let Err(message) = self.enter(command) {
            self.awaiting.remove(&(client, timestamp));
            self.refuse(token, client, timestamp, message);
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
            return self.ingress.submit(source, command).map_err(|e| e.to_string());
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
        let awaiting: Vec<((u64, u64), Token)> = self.awaiting.drain().collect();
        for ((client, timestamp), token) in awaiting {
            self.refuse(token, client, timestamp, STOPPING.into());
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
            })
        };
        self.config.replicas.iter().filter_map(status).collect()
    }

    fn deliver_replies(&mut self) {
        let replies: Vec<Reply> = self.replies.try_iter().collect();
        for reply in replies {
            if let Some(token) = self.awaiting.remove(&(reply.client, reply.timestamp)) {
                self.queue(token, &ServerFrame::Reply(reply));
            }
        }
    }

    fn queue(&mut self, token: Token, frame: &ServerFrame) {
        if let Some(connection) = self.connections.get_mut(&token) {
            connection.out.extend_from_slice(&encode(frame));
            self.flush(token);
        }
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
        self.awaiting.retain(|_, t| *t != token);
        let gone: HashSet<u64> = self.clients.iter().filter(|(_, t)| **t == token).map(|(c, _)| *c).collect();
        for client in gone {
            self.clients.remove(&client);
            self.mailboxes.unregister(client);
        }
    }
}
