//! The tuples that flow between TARA's stages, named as in the paper (Section III).
//!
//! Symbols of the paper map to fields as follows: `c` is [`Command::client`], `t` is
//! [`Command::timestamp`], `q` is [`Request::number`], `s` is `sequence`, `v` is `view`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::client_table::FIRST_TIMESTAMP;

/// `<COMMAND, c, t, op>`: one client operation (Section III-C).
///
/// A client picks a timestamp greater than that of its previous commands; `(client, timestamp)`
/// identifies the command, which is how executors filter out retransmitted duplicates.
/// `answered_below` is not in the paper: it tells executors which results the client already
/// has, so that they can forget them (the client-session rule of the Raft dissertation, 6.3).
///
/// # Sessions
///
/// Executors hold a session per client, opened only by the client's first command (timestamp 1,
/// `answered_below` at most 1) and ended after `session_timeout` slots without its traffic.
/// Any other command of a client without a session is answered
/// [`Outcome::SessionExpired`] and not executed. A client that builds commands by hand opens
/// its session with [`Command::open`], a keep-alive at timestamp 1, and sends its commands
/// (timestamps 2, 3, ...) only once that one is answered: the opener is the one command that
/// can execute a second time (retransmitted after its session ended, it opens a new one),
/// which is harmless for a keep-alive. A first command that is not a keep-alive can run twice
/// if it stays unanswered for a whole session timeout, and so can every command sent before
/// the opener's answer. The library's clients ([`crate::client`]) follow this rule.
///
/// ```
/// use tara::protocol::Command;
///
/// let opener = Command::open(7);
/// assert!(opener.is_keep_alive() && opener.timestamp == 1);
/// // Once the opener is answered: the client's commands, acknowledging the opener's answer.
/// let put = Command { answered_below: 2, ..Command::new(7, 2, b"op".to_vec()) };
/// assert_eq!(put.timestamp, 2);
/// ```
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Command {
    /// The client that issued the command.
    pub client: u64,
    /// Logical timestamp, increasing per client (1, 2, 3, ...).
    pub timestamp: u64,
    /// Every command of this client with a lower timestamp has been answered (0: no claim).
    pub answered_below: u64,
    /// The operation, opaque to the protocol and interpreted by the application.
    #[serde(with = "serde_bytes")]
    pub op: Vec<u8>,
    /// The worker whose client front end took the command, if that front end forwarded it to a
    /// request source on another worker: replies also go there, where the client's connection
    /// waits (not in the paper, whose clients talk to a request source directly). Set by the
    /// front end, never trusted from a client.
    pub origin: Option<u32>,
}

impl Command {
    /// A command that makes no claim about answered commands.
    pub fn new(client: u64, timestamp: u64, op: Vec<u8>) -> Command {
        Command { client, timestamp, answered_below: 0, op, origin: None }
    }

    /// A keep-alive: ordered like any command, it keeps the client's session alive and never
    /// reaches the application (its operation is empty, and its result is empty).
    pub fn keep_alive(client: u64, timestamp: u64, answered_below: u64) -> Command {
        Command { client, timestamp, answered_below, op: Vec::new(), origin: None }
    }

    /// The command that opens `client`'s session: a keep-alive at the first timestamp, claiming
    /// no answers. Send the client's other commands once it is answered (see the type's
    /// documentation).
    pub fn open(client: u64) -> Command {
        Command::keep_alive(client, FIRST_TIMESTAMP, FIRST_TIMESTAMP)
    }

    /// True for a keep-alive (an empty operation, which no application takes).
    pub fn is_keep_alive(&self) -> bool {
        self.op.is_empty()
    }
}

/// A client command on its way to request source `source` (the paper's request input queue).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Submit {
    /// The request source replica that should take the command.
    pub source: u32,
    /// The command.
    pub command: Command,
}

/// `<REQUEST, r, q, cmd>`: a batch of commands numbered by a request source (Section III-C).
///
/// The paper's request holds one command; batching (Section VI-B) puts up to `batch_size`
/// commands into one request so that one consensus instance orders all of them. A request with
/// no commands is a no-op, used to fill slots during a view change. The batch is shared
/// (`Arc`) because every proposal and commit carries it and in-process copies must stay cheap.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Request {
    /// The request source that created the request.
    pub source: u32,
    /// The request number `q`, increasing per source.
    pub number: u64,
    /// The commands, in the order the source received them.
    pub commands: Arc<[Command]>,
}

impl Request {
    /// A request that orders nothing; executors skip it (view change fills gaps with these).
    pub fn noop() -> Request {
        Request { source: u32::MAX, number: 0, commands: Arc::from(Vec::new()) }
    }

    /// True if the request carries no command.
    pub fn is_noop(&self) -> bool {
        self.commands.is_empty()
    }

    /// The identity of a request: two requests with the same identity carry the same commands.
    pub fn id(&self) -> (u32, u64) {
        (self.source, self.number)
    }
}

/// `<PROPOSE, p, s, v, req>`: the active proposer assigns sequence number `s` to a request in
/// view `v` and sends it to every committer (Section III-C).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Propose {
    /// The proposer replica that made the proposal.
    pub proposer: u32,
    /// The sequence number `s`.
    pub sequence: u64,
    /// The view `v` in which the proposal was made.
    pub view: u64,
    /// The proposed request.
    pub request: Request,
}

/// `<COMMIT, k, s, v, req>`: committer `k` stored the assignment of `s` to `req` in view `v` and
/// attests it to every executor (Section III-C).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Commit {
    /// The committer replica that accepted the proposal.
    pub committer: u32,
    /// The sequence number `s`.
    pub sequence: u64,
    /// The view `v` of the accepted proposal.
    pub view: u64,
    /// The accepted request.
    pub request: Request,
}

/// How an executor answered a command.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// The command was executed now; the result is the application's output.
    Executed,
    /// The command had been executed before; the result comes from the reply cache.
    Cached,
    /// The command is older than the client's window of remembered results
    /// ([`crate::protocol::Params::client_window`]); it was not executed and its result is
    /// unknown. A client that keeps at most `client_window` commands outstanding never sees this.
    Expired,
    /// The command claims answers from a client session that has ended (the session timeout
    /// passed without its traffic, or the table was full): it was not executed now. A
    /// retransmission whose first copy executed before the session ended also gets this, so the
    /// command's effect is unknown, as for `Expired`. The client must open a new session under
    /// a new client id. A command of a client whose session never opened gets this too.
    SessionExpired,
}

/// The result of a command, sent by every executor towards the client (Section III-C).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reply {
    /// The executor replica that produced the reply.
    pub executor: u32,
    /// The request source through which the command arrived; the reply sink next to it
    /// hands the reply to the client.
    pub source: u32,
    /// The number of the source's request that carried the command, and the command's place
    /// in it: the source marks it answered without looking the command up.
    pub request: u64,
    /// The command's index in that request.
    pub index: u32,
    /// The client that issued the command.
    pub client: u64,
    /// The command's timestamp.
    pub timestamp: u64,
    /// Whether the command was executed now, answered from the cache, or expired.
    pub outcome: Outcome,
    /// The application's result (empty when expired).
    #[serde(with = "serde_bytes")]
    pub result: Vec<u8>,
}

/// One command as executed by one executor replica: the ordered output of the replicated
/// service, which an embedding dataflow can consume.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Executed {
    /// The executor replica that executed the command.
    pub executor: u32,
    /// The sequence number of the consensus instance that ordered the command.
    pub sequence: u64,
    /// The command's position within the batch ordered at `sequence`.
    pub index: u32,
    /// The command's position in the executed log: how many commands were executed before it
    /// (duplicates excluded). The same at every executor replica, and restored with a
    /// checkpoint, so consumers deduplicate and detect gaps by it.
    pub position: u64,
    /// The command.
    pub command: Command,
    /// The application's result.
    #[serde(with = "serde_bytes")]
    pub result: Vec<u8>,
}

/// `<CHECKPOINT, e, s>`: executor `e` stored a checkpoint of its state before executing `s`
/// (Section III-D).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Checkpoint {
    /// The executor replica that took the checkpoint.
    pub executor: u32,
    /// The checkpoint covers every sequence number below this one.
    pub sequence: u64,
}

/// `<STABLE, g, s>`: garbage-collection source `g` announces the stability threshold `s`
/// (Section III-D).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stable {
    /// The garbage-collection source replica that computed the threshold.
    pub source: u32,
    /// The stability threshold: f+1 executors hold a checkpoint covering everything below it.
    pub sequence: u64,
}

/// State transfer, step one: executor `executor` lags behind the stability threshold and asks
/// executor `to` for a checkpoint covering at least `sequence` (Section III-D, "in order to catch
/// up, the executor ... loads another executor's checkpoint").
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fetch {
    /// The lagging executor that asks.
    pub executor: u32,
    /// The executor asked.
    pub to: u32,
    /// The checkpoint must cover every sequence number below this one.
    pub sequence: u64,
}

/// State transfer, step two: executor `executor` sends its checkpoint at `sequence` to the
/// lagging executor `to`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Transfer {
    /// The executor that sends its checkpoint.
    pub executor: u32,
    /// The lagging executor.
    pub to: u32,
    /// The checkpoint covers every sequence number below this one.
    pub sequence: u64,
    /// The encoded checkpoint.
    pub state: Arc<Vec<u8>>,
}

/// Repair: executor `executor` has waited too long for sequence number `sequence` to commit
/// although later instances are under way, and asks the proposer of its view to send its proposal
/// again (the paper leaves retransmission to the replicas where the framework may lose tuples,
/// Section III-B). Committers answer the repeated proposal with their commit again.
///
/// With partitions (Section IV), a nack also asks an idle partition to fill its slots: the merge
/// waits on a slot that partition never proposed, and its proposer fills every slot up to
/// `sequence` with no-ops when no request waits (`fill`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nack {
    /// The executor that is stuck.
    pub executor: u32,
    /// The partition whose slot it waits for.
    pub partition: u32,
    /// The executor's view of that partition: the nack goes to that view's proposer.
    pub view: u64,
    /// The slot it waits for, in the partition's numbering.
    pub sequence: u64,
    /// Fill unproposed slots up to `sequence` with no-ops, rather than repeat proposals.
    pub fill: bool,
}

/// `<TARGET, r, q>`: request source `r` has assigned request numbers up to `q` (Section III-E).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    /// The request source.
    pub source: u32,
    /// The highest request number it assigned (0: none in its current incarnation).
    pub number: u64,
}

/// `<ACTUAL, e, q⃗>`: for each request source, the highest request number that executor `e`
/// holds as committed (Section III-E).
///
/// With partitions (Section IV) an executor counts a request once its partition committed it
/// and every earlier slot of that partition, whether or not the merge has executed it yet: a
/// partition that waits in the merge for another must not look stuck to its own controllers.
/// `frontier` and `wanted` let a partition's controllers notice the opposite case: the merge
/// waits for an idle partition whose proposer does not fill its slots.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Actual {
    /// The executor.
    pub executor: u32,
    /// Per request source (by global index), the highest committed request number.
    pub agreed: Vec<u64>,
    /// Per partition: how many of its slots, from its slot 0 on, are committed.
    pub frontier: Vec<u64>,
    /// Per partition: how many of its slots the merge waits for (0 when it waits for none).
    pub wanted: Vec<u64>,
}

/// `<VIEW, x, v>`: controller `x` announces view `v` (Section III-E). Replicas adopt the
/// (f+1)-th highest view announced by distinct controllers.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct View {
    /// The controller.
    pub controller: u32,
    /// The view it announces.
    pub view: u64,
}

/// The paper's record `d = (s, v, req)`: the request a committer accepted for sequence number
/// `s`, in the most recent view `v` it accepted a proposal for `s` in (Section III-E).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Accepted {
    /// The sequence number `s`.
    pub sequence: u64,
    /// The view `v` of the accepted proposal.
    pub view: u64,
    /// The accepted request.
    pub request: Request,
}

/// `<RECORD, k, D>`: committer `k` entered view `view` and hands the new proposer every record
/// in its window (Section III-E).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Record {
    /// The committer.
    pub committer: u32,
    /// The view the committer entered; the record is for that view's proposer.
    pub view: u64,
    /// The committer's stability threshold: its records cover sequence numbers from here.
    pub stable: u64,
    /// Its records, in sequence order.
    pub records: Vec<Accepted>,
}
