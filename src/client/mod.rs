//! Clients: unique ids, increasing timestamps, many commands outstanding, retransmission.
//!
//! A command that gets no reply within the retry timeout is retransmitted with the same
//! `(client, timestamp)` through the next way in (request source or front end); executors detect
//! the duplicate, so the command takes effect once. A command a front end refuses goes to the
//! next one at once, and fails at once ([`ClientError::Refused`]) if every one refuses it. Every executor replica replies; the first
//! reply wins. The same pool drives an embedded cluster ([`crate::cluster::Cluster::pool`]) and
//! a cluster over TCP ([`connect`]).

pub mod tcp;

pub use tcp::{TcpTransport, connect, describe, status};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crossbeam_channel::Sender;

use crate::protocol::{Command, Outcome, Reply};

/// How a client pool reaches the request sources.
pub trait Transport: Send {
    /// The number of ways in (request sources of an embedded cluster, front ends over TCP).
    fn routes(&self) -> u32;
    /// A client id no other client of the cluster uses.
    fn new_client_id(&mut self) -> u64;
    /// Replies to `client` go to `mailbox` from now on.
    fn register(&mut self, client: u64, mailbox: &Sender<Reply>);
    /// `client` is gone.
    fn unregister(&mut self, client: u64);
    /// Sends `command` in through `route` (or another route if that one is down).
    fn submit(&mut self, route: u32, command: Command) -> Result<(), ClientError>;
    /// True once the cluster stopped for good.
    fn stopped(&self) -> bool;
    /// Where the transport reports commands a way in refused (none by default).
    fn refusals(&self) -> Option<Receiver<Refusal>> {
        None
    }
}

/// A way in refused a command: it will not answer it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The command's client.
    pub client: u64,
    /// The command's timestamp.
    pub timestamp: u64,
    /// Why, with the way in's address.
    pub message: String,
}

/// How a pool behaves.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Results remembered per client by the executors (the cluster's `client_window`): a client
    /// never runs that far ahead of its oldest unanswered command.
    pub client_window: u64,
    /// A command without reply is retransmitted after this long.
    pub retry_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { client_window: 64, retry_timeout: Duration::from_millis(500) }
    }
}

/// Why a command failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The cluster has stopped.
    Stopped,
    /// The client's oldest unanswered command is `client_window` timestamps behind the next one
    /// (at most that many commands may be in flight); wait for it to complete.
    WindowFull(u64),
    /// No reply arrived within the deadline, despite retransmissions.
    Timeout,
    /// The command was older than the client's window at the executors and was not executed.
    Expired,
    /// The client's session ended at the executors (no traffic for the session timeout, or
    /// the session table was full); the command was not executed now, though a copy of it sent
    /// earlier may have been (its effect is unknown). Use a new client.
    SessionExpired,
    /// The client id does not belong to this pool.
    UnknownClient(u64),
    /// No front end could be reached.
    Unreachable(String),
    /// Every front end refused the command (their last message); it was not sent again.
    Refused(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Stopped => f.write_str("the cluster has stopped"),
            ClientError::WindowFull(n) => {
                write!(f, "{n} commands are outstanding, the most a client may have; wait for one")
            }
            ClientError::Timeout => f.write_str("no reply before the deadline"),
            ClientError::Expired => f.write_str("the command fell out of the client's window and was not executed"),
            ClientError::SessionExpired => {
                f.write_str("session expired: the client's session ended; the command was not executed now (an earlier copy may have been)")
            }
            ClientError::UnknownClient(c) => write!(f, "client {c} does not belong to this pool"),
            ClientError::Unreachable(why) => write!(f, "no front end reachable: {why}"),
            ClientError::Refused(why) => write!(f, "every front end refused the command: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A command's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The client that issued the command.
    pub client: u64,
    /// The command's timestamp (the ticket `submit` returned).
    pub timestamp: u64,
    /// Executed now, answered from the cache (it was a duplicate), or expired.
    pub outcome: Outcome,
    /// The application's result.
    pub result: Vec<u8>,
    /// From the first submission to the first reply.
    pub latency: Duration,
    /// Retransmissions it took.
    pub retransmissions: u32,
}

/// A completion and the clock reading it was taken at.
struct Completed {
    done: Completion,
    completed_at: Instant,
}

struct Pending {
    op: Vec<u8>,
    submitted: Instant,
    source: u32,
    retransmissions: u32,
}

#[derive(Default)]
struct Session {
    next_timestamp: u64,
    pending: BTreeMap<u64, Pending>,
}

impl Session {
    /// Every command below this timestamp has been answered (the acknowledgement a command
    /// carries, so that executors forget those results).
    fn answered_below(&self) -> u64 {
        self.pending.keys().next().copied().unwrap_or(self.next_timestamp)
    }
}

/// Many clients that share one mailbox: each has its own id and timestamps, and any number of
/// them can have commands outstanding. Load generators drive hundreds of closed-loop clients
/// from one thread with it.
pub struct ClientPool {
    transport: Box<dyn Transport>,
    options: ClientOptions,
    mailbox: Receiver<Reply>,
    mailbox_sender: crossbeam_channel::Sender<Reply>,
    /// The transport's refusals (a channel that never delivers if it has none).
    refusals: Receiver<Refusal>,
    sessions: HashMap<u64, Session>,
    /// (retransmission deadline, client, timestamp), oldest first; stale entries are skipped.
    deadlines: VecDeque<(Instant, u64, u64)>,
    outstanding: usize,
    /// Why the transport last failed to send a command (cleared by the next success).
    last_error: Option<ClientError>,
}

impl ClientPool {
    /// A pool that reaches the cluster through `transport`; replies arrive through `mailbox`
    /// (the transport delivers to its sender).
    pub fn new(
        transport: Box<dyn Transport>,
        options: ClientOptions,
        mailbox: (Sender<Reply>, Receiver<Reply>),
    ) -> ClientPool {
        let (mailbox_sender, mailbox) = mailbox;
        let (sessions, deadlines) = (HashMap::new(), VecDeque::new());
        let refusals = transport.refusals().unwrap_or_else(crossbeam_channel::never);
        ClientPool {
            transport,
            options,
            mailbox,
            mailbox_sender,
            refusals,
            sessions,
            deadlines,
            outstanding: 0,
            last_error: None,
        }
    }

    /// Adds a client with a new unique id; returns the id.
    pub fn add_client(&mut self) -> u64 {
        let id = self.transport.new_client_id();
        self.transport.register(id, &self.mailbox_sender);
        self.sessions.insert(id, Session { next_timestamp: 1, pending: BTreeMap::new() });
        id
    }

    /// Commands submitted and not yet answered, over all clients of the pool.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Why the last attempt to send a command failed, if it did (e.g. no front end reachable);
    /// the command is retransmitted all the same.
    pub fn last_error(&self) -> Option<&ClientError> {
        self.last_error.as_ref()
    }

    /// Submits `op` for `client` without waiting; returns the command's timestamp (its ticket).
    pub fn submit(&mut self, client: u64, op: Vec<u8>) -> Result<u64, ClientError> {
        let sources = self.transport.routes().max(1) as u64;
        let window = self.options.client_window;
        let session = self.sessions.get_mut(&client).ok_or(ClientError::UnknownClient(client))?;
        let timestamp = session.next_timestamp;
        let answered_below = session.answered_below();
        // Executors remember results within `client_window` timestamps of the newest command, so
        // a new timestamp may not run that far ahead of the oldest unanswered one.
        if timestamp >= answered_below + window {
            return Err(ClientError::WindowFull(window));
        }
        let source = (client.wrapping_add(timestamp) % sources) as u32;
        let command = Command { client, timestamp, answered_below, op: op.clone(), origin: None };
        // A command that cannot be sent now still counts: the retry timer sends it again. One
        // that every way in refuses fails now.
        let sent = self.transport.submit(source, command);
        if let Err(e @ (ClientError::Stopped | ClientError::Refused(_))) = sent {
            return Err(e);
        }
        self.last_error = sent.err();
        let now = Instant::now();
        let session = self.sessions.get_mut(&client).ok_or(ClientError::UnknownClient(client))?;
        session.next_timestamp = timestamp + 1;
        session.pending.insert(timestamp, Pending { op, submitted: now, source, retransmissions: 0 });
        self.deadlines.push_back((now + self.options.retry_timeout, client, timestamp));
        self.outstanding += 1;
        Ok(timestamp)
    }

    /// Waits up to `timeout` for the next answer, retransmitting overdue commands meanwhile.
    /// `Ok(None)` means nothing completed in time.
    pub fn poll(&mut self, timeout: Duration) -> Result<Option<Completion>, ClientError> {
        // A reply already waiting is taken without the waiting loop: under load that saves
        // several clock readings per command; its completion's clock reading serves the
        // retransmission check.
        while let Ok(refusal) = self.refusals.try_recv() {
            self.fail_over(refusal)?;
        }
        while let Ok(reply) = self.mailbox.try_recv() {
            if let Some(completion) = self.complete(reply) {
                self.retransmit_overdue_at(completion.completed_at)?;
                return Ok(Some(completion.done));
            }
        }
        let until = Instant::now() + timeout;
        loop {
            self.retransmit_overdue()?;
            let now = Instant::now();
            let next_deadline = self.deadlines.front().map_or(until, |(d, _, _)| (*d).min(until));
            let received = crossbeam_channel::select! {
                recv(self.mailbox) -> reply => reply.map_err(|_| RecvTimeoutError::Disconnected),
                recv(self.refusals) -> refusal => {
                    if let Ok(refusal) = refusal {
                        self.fail_over(refusal)?;
                    }
                    continue;
                }
                default(next_deadline.saturating_duration_since(now)) => Err(RecvTimeoutError::Timeout),
            };
            match received {
                Ok(reply) => {
                    if let Some(completion) = self.complete(reply) {
                        return Ok(Some(completion.done));
                    }
                    if Instant::now() >= until {
                        return Ok(None);
                    }
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() >= until => return Ok(None),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(ClientError::Stopped),
            }
            if self.transport.stopped() {
                return Err(ClientError::Stopped);
            }
        }
    }

    fn complete(&mut self, reply: Reply) -> Option<Completed> {
        let session = self.sessions.get_mut(&reply.client)?;
        let pending = session.pending.remove(&reply.timestamp)?;
        self.outstanding -= 1;
        let completed_at = Instant::now();
        let done = Completion {
            client: reply.client,
            timestamp: reply.timestamp,
            outcome: reply.outcome,
            result: reply.result,
            latency: completed_at.saturating_duration_since(pending.submitted),
            retransmissions: pending.retransmissions,
        };
        Some(Completed { done, completed_at })
    }

    /// Sends a refused command through the next way in now, not after its retry timeout.
    fn fail_over(&mut self, refusal: Refusal) -> Result<(), ClientError> {
        self.resend(refusal.client, refusal.timestamp).map(drop)
    }

    fn retransmit_overdue(&mut self) -> Result<(), ClientError> {
        self.retransmit_overdue_at(Instant::now())
    }

    fn retransmit_overdue_at(&mut self, now: Instant) -> Result<(), ClientError> {
        while let Some(&(deadline, client, timestamp)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if self.resend(client, timestamp)? {
                self.deadlines.push_back((now + self.options.retry_timeout, client, timestamp));
            }
        }
        Ok(())
    }

    /// Sends pending command `(client, timestamp)` again, through the next way in; false if it
    /// is no longer pending. Fails it if every way in refuses it.
    fn resend(&mut self, client: u64, timestamp: u64) -> Result<bool, ClientError> {
        let routes = self.transport.routes().max(1);
        let Some(session) = self.sessions.get_mut(&client) else { return Ok(false) };
        let answered_below = session.answered_below();
        let Some(pending) = session.pending.get_mut(&timestamp) else { return Ok(false) };
        pending.source = (pending.source + 1) % routes;
        pending.retransmissions += 1;
        let command = Command { client, timestamp, answered_below, op: pending.op.clone(), origin: None };
        match self.transport.submit(pending.source, command) {
            Err(e @ (ClientError::Stopped | ClientError::Refused(_))) => {
                session.pending.remove(&timestamp);
                self.outstanding -= 1;
                Err(e)
            }
            sent => {
                self.last_error = sent.err();
                Ok(true)
            }
        }
    }
}

impl Drop for ClientPool {
    fn drop(&mut self) {
        for client in self.sessions.keys() {
            self.transport.unregister(*client);
        }
    }
}

/// One client: a unique id, timestamps 1, 2, 3, ..., blocking or pipelined commands.
///
/// ```
/// use tara::app::kv::{KvOp, KvResult, KvStore};
/// use tara::cluster::{Cluster, Description};
///
/// let cluster = Cluster::start(&Description::embedded(), |_| KvStore::default()).unwrap();
/// let mut client = cluster.client();
/// client.invoke(KvOp::Put { key: "k".into(), value: b"v".to_vec() }.encode()).unwrap();
/// let got = client.invoke(KvOp::Get { key: "k".into() }.encode()).unwrap();
/// assert_eq!(KvResult::decode(&got), Ok(KvResult::Value(Some(b"v".to_vec()))));
/// assert!(cluster.stop().digests_agree());
/// ```
pub struct Client {
    pool: ClientPool,
    id: u64,
    finished: HashMap<u64, Completion>,
    deadline: Duration,
}

impl Client {
    /// A client of its own pool.
    pub fn new(mut pool: ClientPool) -> Client {
        let id = pool.add_client();
        Client { pool, id, finished: HashMap::new(), deadline: Duration::from_secs(30) }
    }

    /// This client's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// How long `invoke` and `wait` wait for an answer before giving up (30 s by default).
    pub fn set_deadline(&mut self, deadline: Duration) {
        self.deadline = deadline;
    }

    /// Runs `op` and waits for its result.
    pub fn invoke(&mut self, op: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let ticket = self.submit(op)?;
        let completion = self.wait(ticket)?;
        match completion.outcome {
            Outcome::Expired => Err(ClientError::Expired),
            Outcome::SessionExpired => Err(ClientError::SessionExpired),
            _ => Ok(completion.result),
        }
    }

    /// Keeps this client's session alive: an ordered command that marks the session active at
    /// every executor and that no application sees. A client that holds ephemeral state (an
    /// ephemeral znode) and is otherwise idle sends one well within the cluster's
    /// `session_timeout` (counted in execution slots, so a busy cluster needs them more often).
    /// [`ClientError::SessionExpired`] says the session (and its ephemeral state) is gone.
    pub fn keep_alive(&mut self) -> Result<(), ClientError> {
        self.invoke(Vec::new()).map(drop)
    }

    /// Submits `op` without waiting; returns its ticket. Up to `client_window` commands may be
    /// outstanding at once.
    pub fn submit(&mut self, op: Vec<u8>) -> Result<u64, ClientError> {
        self.pool.submit(self.id, op)
    }

    /// The next answer of any outstanding command, within `timeout`.
    pub fn poll(&mut self, timeout: Duration) -> Result<Option<Completion>, ClientError> {
        if let Some(ticket) = self.finished.keys().next().copied() {
            return Ok(self.finished.remove(&ticket));
        }
        self.pool.poll(timeout)
    }

    /// Waits for the answer to `ticket`; answers to other tickets are kept for `poll`/`wait`.
    pub fn wait(&mut self, ticket: u64) -> Result<Completion, ClientError> {
        let until = Instant::now() + self.deadline;
        loop {
            if let Some(done) = self.finished.remove(&ticket) {
                return Ok(done);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Say why, if the command could not even be sent.
                return Err(self.pool.last_error().cloned().unwrap_or(ClientError::Timeout));
            }
            if let Some(done) = self.pool.poll(left)? {
                self.finished.insert(done.timestamp, done);
            }
        }
    }

    /// Commands submitted and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.pool.outstanding()
    }
}
