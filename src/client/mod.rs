//! Clients: unique ids, increasing timestamps, many commands outstanding, retransmission.
//!
//! Each client's first command opens its session at the executors. The pool sends it for the
//! client: a keep-alive at timestamp 1 ([`Command::open`]), before the client's first command,
//! which it holds (with any others submitted meanwhile) until the keep-alive is answered. Only
//! that keep-alive can execute again should its session end before its answer arrives, and a
//! keep-alive changes nothing; every later command runs at most once. When a session has ended
//! ([`ClientError::SessionExpired`]) the pool fails all the client's outstanding commands as
//! of unknown outcome, never retransmits them, and refuses new ones for that client: the caller
//! adds a new client (a new session) and, if it must know, reads back what took effect.
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

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

pub use crate::dataflow::egress::Replies;
use crate::protocol::client_table::FIRST_TIMESTAMP;
use crate::protocol::{Command, Outcome, Reply};

/// How long a pool that finds no reply waiting polls its mailbox (yielding its core between
/// polls) before it sleeps. A reply that comes within it costs no sleep and no wake-up of the
/// pool's thread, which under load is most of them: the cluster answers a client that keeps
/// commands outstanding every few microseconds.
pub const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(50);

/// Checks for overdue commands per retry timeout.
pub const RETRANSMIT_CHECKS: u32 = 4;

/// How a client pool reaches the request sources.
pub trait Transport: Send {
    /// The number of ways in (request sources of an embedded cluster, front ends over TCP).
    fn routes(&self) -> u32;
    /// A client id no other client of the cluster uses.
    fn new_client_id(&mut self) -> u64;
    /// Replies to `client` go to `mailbox` from now on, in batches.
    fn register(&mut self, client: u64, mailbox: &Sender<Replies>);
    /// `client` is gone.
    fn unregister(&mut self, client: u64);
    /// Sends `command` in through `route` (or another route if that one is down). A transport
    /// may hold it back until [`Transport::flush`], to send what a pool submits together as one
    /// batch.
    fn submit(&mut self, route: u32, command: Command) -> Result<(), ClientError>;
    /// Sends whatever `submit` held back. The pool calls it before it waits for answers; a
    /// transport that wraps others must flush them all.
    fn flush(&mut self) -> Result<(), ClientError>;
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
    /// the session table was full). The outcome of every command the client had outstanding is
    /// unknown: each may have executed once (a copy sent earlier), never twice, and none is
    /// retransmitted. The client takes no more commands: add a new client (a new session), and
    /// read the state back to learn which of them took effect.
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
                f.write_str("session expired: the outcome of the client's outstanding commands is unknown (each ran at most once) and they are not retried; use a new client")
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
    /// From the first submission until the pool took the first reply from its mailbox.
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
    /// When it was last sent (it is sent again a retry timeout later).
    sent: Instant,
    source: u32,
    retransmissions: u32,
    /// Held until the session opens; sent (and timed) from then on.
    held: bool,
}

/// Where a client's session stands at the executors, as far as the pool knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SessionState {
    /// No opener sent yet.
    Closed,
    /// The opener (timestamp 1) is outstanding; the client's commands are held.
    Opening,
    /// The opener was answered; commands are sent as they come.
    Open,
    /// The executors ended the session; the client takes no more commands.
    Expired,
}

struct Session {
    next_timestamp: u64,
    /// The client's commands, the opener included while it is outstanding.
    pending: BTreeMap<u64, Pending>,
    state: SessionState,
}

impl Session {
    fn new() -> Session {
        Session { next_timestamp: FIRST_TIMESTAMP, pending: BTreeMap::new(), state: SessionState::Closed }
    }

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
    mailbox: Receiver<Replies>,
    mailbox_sender: Sender<Replies>,
    /// The rest of the last batch taken from the mailbox, and when it was taken: the replies of
    /// a batch arrived together, and one clock reading per batch instead of one per reply let
    /// a pool of 256 busy clients complete 4 to 8% more commands a second.
    inbox: std::vec::IntoIter<Reply>,
    inbox_at: Instant,
    /// The transport's refusals (a channel that never delivers if it has none).
    refusals: Receiver<Refusal>,
    sessions: HashMap<u64, Session>,
    /// Commands failed together when their session ended, handed out by `poll` first.
    failed: VecDeque<Completion>,
    /// When the pending commands are next checked for one overdue for retransmission: every
    /// [`RETRANSMIT_CHECKS`]th of the retry timeout, so a command goes out again between one
    /// and 1.25 retry timeouts after it was sent, at a cost per check of one look at each
    /// pending command instead of a timer per command.
    next_check: Instant,
    outstanding: usize,
    /// Why the transport last failed to send a command (cleared by the next success).
    last_error: Option<ClientError>,
}

impl ClientPool {
    /// A pool that reaches the cluster through `transport`; replies arrive through `mailbox`
    /// (the transport delivers batches to its sender).
    pub fn new(
        transport: Box<dyn Transport>,
        options: ClientOptions,
        mailbox: (Sender<Replies>, Receiver<Replies>),
    ) -> ClientPool {
        let (mailbox_sender, mailbox) = mailbox;
        let (sessions, next_check) = (HashMap::new(), Instant::now() + options.retry_timeout / RETRANSMIT_CHECKS);
        let refusals = transport.refusals().unwrap_or_else(crossbeam_channel::never);
        ClientPool {
            transport,
            options,
            mailbox,
            mailbox_sender,
            inbox: Vec::new().into_iter(),
            inbox_at: Instant::now(),
            refusals,
            sessions,
            failed: VecDeque::new(),
            next_check,
            outstanding: 0,
            last_error: None,
        }
    }

    /// Adds a client with a new unique id; returns the id.
    pub fn add_client(&mut self) -> u64 {
        let id = self.transport.new_client_id();
        self.transport.register(id, &self.mailbox_sender);
        self.sessions.insert(id, Session::new());
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
    /// The command goes out with the others submitted before the pool next waits for answers
    /// (see [`ClientPool::flush`]).
    ///
    /// The client's first submission opens its session first (a keep-alive at timestamp 1,
    /// see the module documentation): commands submitted until that is answered are held and
    /// sent then. A client whose session ended takes no more commands
    /// ([`ClientError::SessionExpired`]).
    pub fn submit(&mut self, client: u64, op: Vec<u8>) -> Result<u64, ClientError> {
        let window = self.options.client_window;
        let session = self.sessions.get_mut(&client).ok_or(ClientError::UnknownClient(client))?;
        match session.state {
            SessionState::Expired => return Err(ClientError::SessionExpired),
            SessionState::Closed => self.open(client)?,
            SessionState::Opening | SessionState::Open => {}
        }
        let session = self.sessions.get_mut(&client).ok_or(ClientError::UnknownClient(client))?;
        let timestamp = session.next_timestamp;
        // Executors remember results within `client_window` timestamps of the newest command, so
        // a new timestamp may not run that far ahead of the oldest unanswered one. The opener
        // does not count: it is answered before any other command is sent.
        if timestamp >= session.answered_below().max(FIRST_TIMESTAMP + 1) + window {
            return Err(ClientError::WindowFull(window));
        }
        let (held, answered_below) = (session.state != SessionState::Open, session.answered_below());
        let source = self.route(client, timestamp);
        if !held {
            let command = Command { client, timestamp, answered_below, op: op.clone(), origin: None };
            // A command that cannot be sent now still counts: the retry timer sends it again. One
            // that every way in refuses fails now.
            let sent = self.transport.submit(source, command);
            if let Err(e @ (ClientError::Stopped | ClientError::Refused(_))) = sent {
                return Err(e);
            }
            self.last_error = sent.err();
        }
        let now = Instant::now();
        let session = self.sessions.get_mut(&client).ok_or(ClientError::UnknownClient(client))?;
        session.next_timestamp = timestamp + 1;
        session.pending.insert(timestamp, Pending { op, submitted: now, sent: now, source, retransmissions: 0, held });
        self.outstanding += 1;
        Ok(timestamp)
    }

    /// The way in of `client`'s command `timestamp` (commands spread over the ways in).
    fn route(&self, client: u64, timestamp: u64) -> u32 {
        let routes = self.transport.routes().max(1) as u64;
        (client.wrapping_add(timestamp) % routes) as u32
    }

    /// Sends `client`'s opener: a keep-alive at timestamp 1, outstanding like a command but
    /// neither counted nor reported (executing it again opens a session and changes nothing).
    fn open(&mut self, client: u64) -> Result<(), ClientError> {
        let source = self.route(client, FIRST_TIMESTAMP);
        let sent = self.transport.submit(source, Command::open(client));
        if let Err(e @ (ClientError::Stopped | ClientError::Refused(_))) = sent {
            return Err(e);
        }
        self.last_error = sent.err();
        let now = Instant::now();
        let session = self.sessions.get_mut(&client).ok_or(ClientError::UnknownClient(client))?;
        debug_assert!(session.pending.is_empty(), "a closed session has nothing outstanding");
        session.state = SessionState::Opening;
        session.next_timestamp = FIRST_TIMESTAMP + 1;
        let opener = Pending { op: Vec::new(), submitted: now, sent: now, source, retransmissions: 0, held: false };
        session.pending.insert(FIRST_TIMESTAMP, opener);
        Ok(())
    }

    /// Waits up to `timeout` for the next answer, retransmitting overdue commands meanwhile.
    /// `Ok(None)` means nothing completed in time.
    ///
    /// A command whose session ended completes with [`Outcome::SessionExpired`]: its outcome
    /// is unknown (see [`ClientError::SessionExpired`]), and so is that of every other command
    /// of its client, which all complete so too, one per call, and are never retransmitted.
    pub fn poll(&mut self, timeout: Duration) -> Result<Option<Completion>, ClientError> {
        if let Some(done) = self.failed.pop_front() {
            return Ok(Some(done));
        }
        while let Ok(refusal) = self.refusals.try_recv() {
            self.fail_over(refusal)?;
        }
        // A reply already waiting, or arriving while the pool spins, is taken without the
        // waiting loop: under load that saves the clock readings and the sleep and wake-up of a
        // blocking receive per command.
        if let Some(done) = self.complete_waiting()? {
            return Ok(Some(done));
        }
        // Nothing to hand out: what was submitted since the last wait goes out now, together.
        self.flush()?;
        if self.spin()
            && let Some(done) = self.complete_waiting()?
        {
            return Ok(Some(done));
        }
        let until = Instant::now() + timeout;
        loop {
            self.retransmit_overdue()?;
            // Retransmissions, and commands released by an opener's answer, go out before the
            // wait.
            self.flush()?;
            let now = Instant::now();
            let next_deadline = self.next_check.min(until);
            let received = crossbeam_channel::select! {
                recv(self.mailbox) -> batch => batch.map_err(|_| RecvTimeoutError::Disconnected),
                recv(self.refusals) -> refusal => {
                    if let Ok(refusal) = refusal {
                        self.fail_over(refusal)?;
                    }
                    continue;
                }
                default(next_deadline.saturating_duration_since(now)) => Err(RecvTimeoutError::Timeout),
            };
            match received {
                Ok(batch) => {
                    self.take_batch(batch);
                    if let Some(done) = self.complete_waiting()? {
                        return Ok(Some(done));
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

    /// Takes the replies already received, in order, until one completes a command (its
    /// completion's clock reading also serves the retransmission check); `None` once none is
    /// left.
    fn complete_waiting(&mut self) -> Result<Option<Completion>, ClientError> {
        loop {
            let Some(reply) = self.inbox.next() else {
                match self.mailbox.try_recv() {
                    Ok(batch) => self.take_batch(batch),
                    Err(_) => return Ok(None),
                }
                continue;
            };
            if let Some(completion) = self.complete(reply)? {
                self.retransmit_overdue_at(completion.completed_at)?;
                return Ok(Some(completion.done));
            }
        }
    }

    /// Sends the commands submitted and not yet sent, now: `submit` holds them back until the
    /// pool next waits for answers ([`ClientPool::poll`]) or the transport holds its most (32
    /// in a process, 64 over TCP), so that commands submitted together go out together. Only a
    /// stopped cluster fails it (a command that cannot be sent now is retransmitted by its
    /// timer). A program that submits and then does
    /// other work before it polls calls this to put its commands in flight meanwhile.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        match self.transport.flush() {
            Err(ClientError::Stopped) => Err(ClientError::Stopped),
            sent => {
                if let Err(e) = sent {
                    self.last_error = Some(e);
                }
                Ok(())
            }
        }
    }

    /// Polls the mailbox for up to [`SPIN_BEFORE_SLEEP`] while commands are outstanding; true if
    /// a batch arrived (it is in the inbox).
    fn spin(&mut self) -> bool {
        if self.outstanding == 0 {
            return false;
        }
        let until = Instant::now() + SPIN_BEFORE_SLEEP;
        loop {
            for _ in 0..8 {
                match self.mailbox.try_recv() {
                    Ok(batch) => {
                        self.take_batch(batch);
                        return true;
                    }
                    Err(TryRecvError::Disconnected) => return false,
                    // Yielding, not spinning: a worker that shares this thread's core runs at
                    // once instead of after the spin.
                    Err(TryRecvError::Empty) => std::thread::yield_now(),
                }
            }
            if Instant::now() >= until {
                return false;
            }
        }
    }

    /// Makes `batch` the inbox, taken now.
    fn take_batch(&mut self, batch: Replies) {
        debug_assert!(self.inbox.len() == 0, "the inbox is drained before the next batch is taken");
        (self.inbox, self.inbox_at) = (batch.into_iter(), Instant::now());
    }

    fn complete(&mut self, reply: Reply) -> Result<Option<Completed>, ClientError> {
        let Some(session) = self.sessions.get_mut(&reply.client) else { return Ok(None) };
        if !session.pending.contains_key(&reply.timestamp) {
            return Ok(None);
        }
        let completed_at = self.inbox_at;
        if reply.outcome == Outcome::SessionExpired {
            self.expire(reply.client, completed_at);
            return Ok(self.failed.pop_front().map(|done| Completed { done, completed_at }));
        }
        if session.state == SessionState::Opening && reply.timestamp == FIRST_TIMESTAMP {
            session.pending.remove(&FIRST_TIMESTAMP);
            session.state = SessionState::Open;
            self.release_held(reply.client)?;
            return Ok(None);
        }
        let Some(pending) = session.pending.remove(&reply.timestamp) else { return Ok(None) };
        self.outstanding -= 1;
        let done = Completion {
            client: reply.client,
            timestamp: reply.timestamp,
            outcome: reply.outcome,
            result: reply.result,
            latency: completed_at.saturating_duration_since(pending.submitted),
            retransmissions: pending.retransmissions,
        };
        Ok(Some(Completed { done, completed_at }))
    }

    /// `client`'s session ended: every outstanding command of it fails as of unknown outcome
    /// (queued in `failed`), none is sent again, and the client takes no more commands.
    fn expire(&mut self, client: u64, now: Instant) {
        let Some(session) = self.sessions.get_mut(&client) else { return };
        let opening = session.state == SessionState::Opening;
        session.state = SessionState::Expired;
        for (timestamp, pending) in std::mem::take(&mut session.pending) {
            if opening && timestamp == FIRST_TIMESTAMP {
                continue; // the opener: no ticket of the caller's
            }
            self.outstanding -= 1;
            self.failed.push_back(Completion {
                client,
                timestamp,
                outcome: Outcome::SessionExpired,
                result: Vec::new(),
                latency: now.saturating_duration_since(pending.submitted),
                retransmissions: pending.retransmissions,
            });
        }
    }

    /// The opener was answered: sends the commands held for it. They acknowledge the opener's
    /// answer (`answered_below` >= 2), and an executor answered the opener only after it was
    /// ordered, so they are ordered after it, whichever way in they take.
    fn release_held(&mut self, client: u64) -> Result<(), ClientError> {
        let Some(session) = self.sessions.get_mut(&client) else { return Ok(()) };
        let answered_below = session.answered_below();
        debug_assert!(answered_below > FIRST_TIMESTAMP, "the opener is answered");
        let now = Instant::now();
        let mut commands = Vec::new();
        for (timestamp, pending) in session.pending.iter_mut().filter(|(_, p)| p.held) {
            (pending.held, pending.sent) = (false, now);
            commands.push((
                pending.source,
                Command { client, timestamp: *timestamp, answered_below, op: pending.op.clone(), origin: None },
            ));
        }
        for (source, command) in commands {
            // A refusal or a failure to send is the retry timer's to handle, as for any command.
            match self.transport.submit(source, command) {
                Err(ClientError::Stopped) => return Err(ClientError::Stopped),
                sent => self.last_error = sent.err(),
            }
        }
        Ok(())
    }

    /// Sends a refused command through the next way in now, not after its retry timeout.
    fn fail_over(&mut self, refusal: Refusal) -> Result<(), ClientError> {
        self.resend(refusal.client, refusal.timestamp).map(drop)
    }

    fn retransmit_overdue(&mut self) -> Result<(), ClientError> {
        self.retransmit_overdue_at(Instant::now())
    }

    /// Sends again every command sent a retry timeout or more ago, if a check is due.
    fn retransmit_overdue_at(&mut self, now: Instant) -> Result<(), ClientError> {
        if now < self.next_check {
            return Ok(());
        }
        let retry = self.options.retry_timeout;
        self.next_check = now + (retry / RETRANSMIT_CHECKS).max(Duration::from_millis(1));
        let mut overdue = Vec::new();
        for (client, session) in &self.sessions {
            let due = session.pending.iter().filter(|(_, p)| !p.held && now.saturating_duration_since(p.sent) >= retry);
            overdue.extend(due.map(|(timestamp, _)| (*client, *timestamp)));
        }
        for (client, timestamp) in overdue {
            self.resend(client, timestamp)?;
        }
        Ok(())
    }

    /// Sends pending command `(client, timestamp)` again, through the next way in; false if it
    /// is no longer pending (answered, or failed with its session) or still held. Fails it if
    /// every way in refuses it; a refused opener fails the commands held for it too.
    fn resend(&mut self, client: u64, timestamp: u64) -> Result<bool, ClientError> {
        let routes = self.transport.routes().max(1);
        let Some(session) = self.sessions.get_mut(&client) else { return Ok(false) };
        let answered_below = session.answered_below();
        let opener = session.state == SessionState::Opening && timestamp == FIRST_TIMESTAMP;
        let Some(pending) = session.pending.get_mut(&timestamp) else { return Ok(false) };
        if pending.held {
            return Ok(false);
        }
        pending.source = (pending.source + 1) % routes;
        pending.retransmissions += 1;
        pending.sent = Instant::now();
        let command = Command { client, timestamp, answered_below, op: pending.op.clone(), origin: None };
        match self.transport.submit(pending.source, command) {
            Err(e @ (ClientError::Stopped | ClientError::Refused(_))) if opener => {
                // Nothing of the client's was sent but the opener: start afresh next time.
                self.outstanding -= session.pending.len() - 1;
                *session = Session::new();
                Err(e)
            }
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
    /// outstanding at once. The command goes out when the client next waits ([`Client::poll`],
    /// [`Client::wait`]) or flushes ([`Client::flush`]).
    pub fn submit(&mut self, op: Vec<u8>) -> Result<u64, ClientError> {
        self.pool.submit(self.id, op)
    }

    /// Sends the submitted commands now instead of at the next wait ([`ClientPool::flush`]).
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.pool.flush()
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A transport that records what the pool sends; replies are put in the mailbox by hand.
    struct Recording(Arc<Mutex<Vec<Command>>>);

    impl Transport for Recording {
        fn routes(&self) -> u32 {
            2
        }
        fn new_client_id(&mut self) -> u64 {
            7
        }
        fn register(&mut self, _: u64, _: &Sender<Replies>) {}
        fn unregister(&mut self, _: u64) {}
        fn submit(&mut self, _: u32, command: Command) -> Result<(), ClientError> {
            self.0.lock().unwrap().push(command);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), ClientError> {
            Ok(())
        }
        fn stopped(&self) -> bool {
            false
        }
    }

    fn pool(retry: Duration) -> (ClientPool, Arc<Mutex<Vec<Command>>>, Sender<Replies>) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let mailbox = crossbeam_channel::unbounded();
        let replies = mailbox.0.clone();
        let options = ClientOptions { client_window: 8, retry_timeout: retry };
        (ClientPool::new(Box::new(Recording(sent.clone())), options, mailbox), sent, replies)
    }

    fn reply(timestamp: u64, outcome: Outcome) -> Replies {
        vec![Reply { executor: 0, source: 0, request: 1, index: 0, client: 7, timestamp, outcome, result: Vec::new() }]
    }

    fn sent(log: &Mutex<Vec<Command>>) -> Vec<(u64, u64, bool)> {
        log.lock().unwrap().iter().map(|c| (c.timestamp, c.answered_below, c.is_keep_alive())).collect()
    }

    /// A session opens with a keep-alive at timestamp 1; the client's commands wait for its
    /// answer and then go out acknowledging it.
    #[test]
    fn a_session_opens_with_a_keep_alive_before_any_command() {
        let (mut pool, log, replies) = pool(Duration::from_secs(60));
        let client = pool.add_client();
        assert!(sent(&log).is_empty(), "adding a client sends nothing");
        assert_eq!(pool.submit(client, b"a".to_vec()), Ok(2));
        assert_eq!(pool.submit(client, b"b".to_vec()), Ok(3));
        assert_eq!(sent(&log), vec![(1, 1, true)], "only the opener goes out before its answer");
        assert_eq!(pool.outstanding(), 2, "the opener is not the caller's");
        replies.send(reply(1, Outcome::Executed)).unwrap();
        assert_eq!(pool.poll(Duration::from_millis(10)), Ok(None), "the opener's answer is not reported");
        assert_eq!(sent(&log), vec![(1, 1, true), (2, 2, false), (3, 2, false)]);
        replies.send(reply(2, Outcome::Executed)).unwrap();
        let done = pool.poll(Duration::from_secs(5)).unwrap().expect("an answer");
        assert_eq!((done.timestamp, done.outcome), (2, Outcome::Executed));
        assert_eq!(pool.submit(client, b"c".to_vec()), Ok(4));
        assert_eq!(sent(&log).last(), Some(&(4, 3, false)), "open: sent at once");
    }

    /// "Session expired" fails every outstanding command of the client as of unknown outcome,
    /// none is retransmitted, and the client takes no more commands.
    #[test]
    fn session_expired_fails_the_outstanding_commands_and_never_retransmits() {
        let (mut pool, log, replies) = pool(Duration::from_millis(1));
        let client = pool.add_client();
        replies.send(reply(1, Outcome::Executed)).unwrap();
        pool.submit(client, b"a".to_vec()).unwrap();
        let _ = pool.poll(Duration::from_millis(5));
        for op in [b"b", b"c"] {
            pool.submit(client, op.to_vec()).unwrap();
        }
        replies.send(reply(3, Outcome::SessionExpired)).unwrap();
        let mut failed = Vec::new();
        while let Some(done) = pool.poll(Duration::from_millis(20)).unwrap() {
            failed.push((done.timestamp, done.outcome));
        }
        let expired = Outcome::SessionExpired;
        assert_eq!(failed, vec![(2, expired), (3, expired), (4, expired)], "every outstanding command fails");
        assert_eq!(pool.outstanding(), 0);
        let before = log.lock().unwrap().len();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(pool.poll(Duration::from_millis(20)), Ok(None));
        assert_eq!(log.lock().unwrap().len(), before, "nothing is retransmitted after the session ended");
        assert_eq!(pool.submit(client, b"d".to_vec()), Err(ClientError::SessionExpired));
        assert!(ClientError::SessionExpired.to_string().contains("outcome"), "the error says the outcome is unknown");
    }

    /// A command without an answer goes out again a retry timeout (at most a quarter more)
    /// after it was sent; an answered one never does.
    #[test]
    fn an_unanswered_command_is_retransmitted_after_the_retry_timeout() {
        let (mut pool, log, replies) = pool(Duration::from_millis(40));
        let client = pool.add_client();
        replies.send(reply(1, Outcome::Executed)).unwrap();
        let (answered, unanswered) =
            (pool.submit(client, b"a".to_vec()).unwrap(), pool.submit(client, b"b".to_vec()).unwrap());
        let sent_at = Instant::now();
        assert_eq!(pool.poll(Duration::from_millis(5)), Ok(None), "the opener's answer releases both");
        replies.send(reply(answered, Outcome::Executed)).unwrap();
        assert_eq!(pool.poll(Duration::from_secs(1)).unwrap().map(|c| c.timestamp), Some(answered));
        let copies =
            |log: &Mutex<Vec<Command>>, t: u64| log.lock().unwrap().iter().filter(|c| c.timestamp == t).count();
        while copies(&log, unanswered) < 2 {
            assert_eq!(pool.poll(Duration::from_millis(5)), Ok(None));
            assert!(sent_at.elapsed() < Duration::from_secs(5), "never retransmitted");
        }
        assert!(sent_at.elapsed() >= Duration::from_millis(40), "retransmitted before its timeout");
        assert_eq!(copies(&log, answered), 1, "an answered command is not sent again");
        replies.send(reply(unanswered, Outcome::Executed)).unwrap();
        let done = pool.poll(Duration::from_secs(1)).unwrap().expect("the answer");
        assert_eq!((done.timestamp, done.retransmissions), (unanswered, 1));
    }

    /// A transport that sends what it holds only when flushed.
    struct Holding(Vec<Command>, Arc<Mutex<Vec<Command>>>);

    impl Transport for Holding {
        fn routes(&self) -> u32 {
            1
        }
        fn new_client_id(&mut self) -> u64 {
            7
        }
        fn register(&mut self, _: u64, _: &Sender<Replies>) {}
        fn unregister(&mut self, _: u64) {}
        fn submit(&mut self, _: u32, command: Command) -> Result<(), ClientError> {
            self.0.push(command);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), ClientError> {
            self.1.lock().unwrap().append(&mut self.0);
            Ok(())
        }
        fn stopped(&self) -> bool {
            false
        }
    }

    /// Submitted commands go out when the pool waits or is flushed, not one by one.
    #[test]
    fn submitted_commands_go_out_at_a_wait_or_a_flush() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let mailbox = crossbeam_channel::unbounded();
        let replies = mailbox.0.clone();
        let options = ClientOptions { client_window: 8, retry_timeout: Duration::from_secs(60) };
        let mut pool = ClientPool::new(Box::new(Holding(Vec::new(), sent.clone())), options, mailbox);
        let client = pool.add_client();
        pool.submit(client, b"a".to_vec()).unwrap();
        assert!(sent.lock().unwrap().is_empty(), "the opener waits for the flush");
        assert_eq!(pool.poll(Duration::from_millis(1)), Ok(None));
        assert_eq!(sent.lock().unwrap().len(), 1, "waiting sent the opener");
        replies.send(reply(1, Outcome::Executed)).unwrap();
        assert_eq!(pool.poll(Duration::from_millis(5)), Ok(None));
        assert_eq!(sent.lock().unwrap().len(), 2, "the opener's answer released the held command");
        pool.submit(client, b"b".to_vec()).unwrap();
        pool.submit(client, b"c".to_vec()).unwrap();
        assert_eq!(sent.lock().unwrap().len(), 2);
        pool.flush().unwrap();
        let timestamps: Vec<u64> = sent.lock().unwrap().iter().map(|c| c.timestamp).collect();
        assert_eq!(timestamps, vec![1, 2, 3, 4], "a flush sends both, in order");
    }
}
