//! Who sends which tuple to whom: the dataflow of the paper's Figure 3, written once as data.
//!
//! Every tuple kind has one row in [`ROUTES`]: the stage that emits it, the stages that receive
//! it, and how its receivers are chosen. The timely operators, the deterministic simulator and
//! `tara graph` all derive their edges from this table, and [`leader_of`] is the one place that
//! says which proposer leads a view.
//!
//! ```
//! use tara::protocol::topology::{self, Kind, Stage, To};
//!
//! let commit = topology::route(Kind::Commit);
//! assert_eq!((commit.from, commit.to_whom), (Some(Stage::Committer), To::Every));
//! assert_eq!(commit.to, &[Stage::Executor, Stage::Proposer][..], "proposers count commits for `max_in_flight`");
//! assert!(commit.after_persist, "a commit leaves only once its record is durable");
//! assert!(topology::route(Kind::Record).is_loop(), "records travel back to the proposers");
//! assert_eq!(topology::leader_of(5, 2), 1);
//! ```

use serde::{Deserialize, Serialize};

use super::params::Params;
use super::tuple::{
    Actual, Checkpoint, Commit, Executed, Fetch, Nack, Propose, Record, Reply, Request, Stable, Submit, Target,
    Transfer, View,
};

/// A TARA stage that has replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stage {
    /// Request sources (f+1).
    Source,
    /// Proposers (f+1).
    Proposer,
    /// Committers (2f+1).
    Committer,
    /// Executors (2f+1).
    Executor,
    /// Garbage-collection sources (2f+1).
    Gc,
    /// Controllers (2f+1).
    Controller,
}

impl Stage {
    /// Every stage, in dataflow order: a tuple sent to a stage that comes no later in this
    /// order travels on a feedback loop.
    pub const ALL: [Stage; 6] =
        [Stage::Source, Stage::Proposer, Stage::Committer, Stage::Executor, Stage::Gc, Stage::Controller];

    /// The stage's name as in description files.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Source => "sources",
            Stage::Proposer => "proposers",
            Stage::Committer => "committers",
            Stage::Executor => "executors",
            Stage::Gc => "gc",
            Stage::Controller => "controllers",
        }
    }

    /// One replica of the stage, in messages and directory names ("committer 1",
    /// `committer-1/`).
    pub fn replica_name(self) -> &'static str {
        match self {
            Stage::Source => "source",
            Stage::Proposer => "proposer",
            Stage::Committer => "committer",
            Stage::Executor => "executor",
            Stage::Gc => "gc",
            Stage::Controller => "controller",
        }
    }

    /// The stage's operator name in the dataflow (it shows in timely's logs), as in the paper.
    pub fn operator(self) -> &'static str {
        match self {
            Stage::Source => "RequestSource",
            Stage::Proposer => "Proposer",
            Stage::Committer => "Committer",
            Stage::Executor => "Executor",
            Stage::Gc => "GcSource",
            Stage::Controller => "Controller",
        }
    }

    /// Replicas of this stage under `params`, in all partitions (Sections III-A and IV).
    pub fn replicas(self, params: &Params) -> usize {
        let partitions = if self.is_partitioned() { params.partitions } else { 1 };
        self.per_partition(params) * partitions
    }

    /// True for the stages that each partition has its own replicas of (Section IV): sources,
    /// proposers, committers and controllers. Executors and garbage-collection sources are
    /// shared by all partitions.
    pub fn is_partitioned(self) -> bool {
        matches!(self, Stage::Source | Stage::Proposer | Stage::Committer | Stage::Controller)
    }

    /// Replicas of this stage in one partition (all of them for a shared stage). Replica `r` of
    /// partition `i` has the global index `i * per_partition + r`.
    pub fn per_partition(self, params: &Params) -> usize {
        match self {
            Stage::Source => params.sources(),
            Stage::Proposer => params.proposers(),
            Stage::Committer => params.committers(),
            Stage::Executor => params.executors(),
            Stage::Gc => params.gc_sources(),
            Stage::Controller => params.controllers(),
        }
    }

    /// The stage's position in [`Stage::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The proposer that leads `view` (Section III-C: "proposer p = v mod (f+1)"), by its index
/// within its partition.
pub fn leader_of(view: u64, proposers: usize) -> u32 {
    assert!(proposers > 0, "a deployment has proposers");
    (view % proposers as u64) as u32
}

/// The partition of replica `replica` of `stage` (0 for a shared stage), and its index within
/// the partition.
pub fn locate(stage: Stage, replica: u32, params: &Params) -> (u32, u32) {
    if !stage.is_partitioned() {
        return (0, replica);
    }
    let n = stage.per_partition(params) as u32;
    (replica / n, replica % n)
}

/// The partition of one replica of a partitioned stage, to tell tuples of its own partition
/// from others (routing delivers only those, but a replica does not rely on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    /// The partition's index.
    pub index: u32,
    /// Partitions in the deployment.
    pub count: u32,
}

impl Partition {
    /// The partition of replica `replica` of `stage`.
    pub fn of(stage: Stage, replica: u32, params: &Params) -> Partition {
        Partition { index: locate(stage, replica, params).0, count: params.partitions as u32 }
    }

    /// The index within this partition of the sender `replica`, of a stage with `per_partition`
    /// replicas per partition; `None` if it belongs to another partition.
    pub fn own(&self, replica: u32, per_partition: usize) -> Option<u32> {
        let n = per_partition as u32;
        (replica / n == self.index).then_some(replica % n)
    }

    /// This partition's stability threshold for the shared threshold `stable`, which is in
    /// execution numbering (Section III-D with Section IV).
    pub fn stable(&self, stable: u64) -> u64 {
        super::merge::partition_stable(stable, self.index, self.count as usize)
    }
}

/// The global index of replica `local` of `stage` in `partition`.
pub fn global(stage: Stage, partition: u32, local: u32, params: &Params) -> u32 {
    if !stage.is_partitioned() {
        return local;
    }
    partition * stage.per_partition(params) as u32 + local
}

/// The partition that orders client `client`'s commands. One client's commands all go to one
/// partition, so they stay in the order that partition gives them (Section IV leaves the
/// assignment open; by client is what keeps a client's own order without extra rules).
pub fn partition_of_client(client: u64, params: &Params) -> u32 {
    (client % params.partitions as u64) as u32
}

/// The request source that takes client `client`'s command on route `route` (a client moves to
/// the next route when it retransmits): one of the f+1 sources of the client's partition.
pub fn source_of(client: u64, route: u32, params: &Params) -> u32 {
    let local = route % params.sources() as u32;
    global(Stage::Source, partition_of_client(client, params), local, params)
}

/// The kinds of tuple, one per row of [`ROUTES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// A client command for a request source.
    Command,
    /// A numbered batch of commands, for the active proposer.
    Request,
    /// A sequence-number assignment, for every committer.
    Propose,
    /// An attested assignment, for every executor (and the proposers, which bound the
    /// instances not yet committed).
    Commit,
    /// A command's result, for the source it came through (and its client).
    Reply,
    /// An executed command, for a consuming dataflow.
    Executed,
    /// A durable checkpoint, for every garbage-collection source.
    Checkpoint,
    /// The stability threshold, for every proposer, committer and executor.
    Stable,
    /// A lagging executor asks a peer for a checkpoint.
    Fetch,
    /// A peer's checkpoint for a lagging executor.
    Transfer,
    /// An executor asks the active proposer to repeat a proposal.
    Nack,
    /// A source's progress report, for every controller.
    Target,
    /// An executor's progress report, for every controller.
    Actual,
    /// A controller's view announcement, for every replica that follows views.
    View,
    /// A committer's records, for the proposer of the view it entered.
    Record,
}

/// How the receivers of a tuple are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum To {
    /// The one replica the tuple names ([`Tuple::replica`]).
    Named,
    /// Every replica of every receiving stage.
    Every,
    /// The proposer that leads the view the tuple names ([`Tuple::view`], [`leader_of`]).
    Leader,
    /// Nobody inside the protocol: the tuple leaves the dataflow where it was emitted.
    Out,
}

/// One row of the topology: a tuple kind, its sender, its receivers.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// The tuple kind.
    pub kind: Kind,
    /// The stage that emits it; `None` for commands, which come from clients.
    pub from: Option<Stage>,
    /// The stages that receive it.
    pub to: &'static [Stage],
    /// Replies also go to the client that issued the command.
    pub to_clients: bool,
    /// How the receivers among those stages are chosen.
    pub to_whom: To,
    /// Host duty: the tuple leaves only once every durable write its replica issued before it
    /// is on disk (persist, then release).
    pub after_persist: bool,
    /// The receiving stage's request-path input, which fault injection can make a replica lose.
    pub request_path: bool,
    /// The paper section the route comes from.
    pub section: &'static str,
}

impl Route {
    /// True if the tuple travels on a feedback loop: some receiver comes no later than the
    /// sender in dataflow order.
    pub fn is_loop(&self) -> bool {
        let Some(from) = self.from else { return false };
        self.to.iter().any(|to| to.index() <= from.index())
    }

    /// The name of the feedback loop the tuple travels on, as the docs and `tara graph` call it.
    pub fn loop_name(&self) -> Option<&'static str> {
        if !self.is_loop() {
            return None;
        }
        Some(match self.kind {
            Kind::Reply => "reply loop",
            Kind::Stable => "GC loop",
            Kind::View => "view loop",
            Kind::Record => "record loop",
            Kind::Fetch | Kind::Transfer => "state-transfer loop",
            Kind::Nack => "repair loop",
            Kind::Commit => "commit loop",
            _ => "loop",
        })
    }
}

use Stage::{Committer, Controller, Executor, Gc, Proposer, Source};

const fn row(kind: Kind, from: Option<Stage>, to: &'static [Stage], to_whom: To, section: &'static str) -> Route {
    Route { kind, from, to, to_clients: false, to_whom, after_persist: false, request_path: false, section }
}

/// The whole topology: every tuple kind, in the order of the request path, then the loops.
pub const ROUTES: [Route; 15] = [
    Route { request_path: true, ..row(Kind::Command, None, &[Source], To::Named, "III-C") },
    Route { request_path: true, ..row(Kind::Request, Some(Source), &[Proposer], To::Leader, "III-C") },
    Route {
        request_path: true,
        after_persist: true,
        ..row(Kind::Propose, Some(Proposer), &[Committer], To::Every, "III-C")
    },
    Route {
        request_path: true,
        after_persist: true,
        ..row(Kind::Commit, Some(Committer), &[Executor, Proposer], To::Every, "III-C")
    },
    Route { to_clients: true, ..row(Kind::Reply, Some(Executor), &[Source], To::Named, "III-C") },
    row(Kind::Executed, Some(Executor), &[], To::Out, "III-C"),
    Route {
        request_path: true,
        after_persist: true,
        ..row(Kind::Checkpoint, Some(Executor), &[Gc], To::Every, "III-D")
    },
    row(Kind::Stable, Some(Gc), &[Proposer, Committer, Executor], To::Every, "III-D"),
    row(Kind::Fetch, Some(Executor), &[Executor], To::Named, "III-D"),
    row(Kind::Transfer, Some(Executor), &[Executor], To::Named, "III-D"),
    row(Kind::Nack, Some(Executor), &[Proposer], To::Leader, "III-B"),
    row(Kind::Target, Some(Source), &[Controller], To::Every, "III-E"),
    row(Kind::Actual, Some(Executor), &[Controller], To::Every, "III-E"),
    row(Kind::View, Some(Controller), &[Source, Proposer, Committer, Executor, Controller], To::Every, "III-E"),
    Route { after_persist: true, ..row(Kind::Record, Some(Committer), &[Proposer], To::Leader, "III-E") },
];

/// The row of `kind`.
pub fn route(kind: Kind) -> &'static Route {
    let row = &ROUTES[kind as usize];
    debug_assert_eq!(row.kind, kind, "ROUTES is in Kind order");
    row
}

/// The routes a stage receives, in table order (the order its host drains them in).
pub fn inputs(stage: Stage) -> impl Iterator<Item = &'static Route> {
    ROUTES.iter().filter(move |r| r.to.contains(&stage))
}

/// The routes a stage emits, in table order.
pub fn outputs(stage: Stage) -> impl Iterator<Item = &'static Route> {
    ROUTES.iter().filter(move |r| r.from == Some(stage))
}

/// The replica of `stage` that a tuple of `route` is for, when it goes to one replica only:
/// the named one, or the leader of the named view. `None` for multicasts.
pub fn destination(route: &Route, tuple: &Tuple, params: &Params) -> Option<u32> {
    match route.to_whom {
        To::Named => tuple.replica(),
        To::Leader => {
            let (view, partition) = (tuple.view()?, tuple.partition(params)?);
            Some(global(Stage::Proposer, partition, leader_of(view, params.proposers()), params))
        }
        To::Every | To::Out => None,
    }
}

/// The replicas of `stage` that a multicast of a tuple of `partition` ([`Tuple::partition`])
/// goes to: those of that partition when the stage is partitioned, otherwise every replica.
pub fn receivers(stage: Stage, partition: Option<u32>, params: &Params) -> std::ops::Range<u32> {
    match partition.filter(|_| stage.is_partitioned()) {
        Some(partition) => {
            let first = global(stage, partition, 0, params);
            first..first + stage.per_partition(params) as u32
        }
        None => 0..stage.replicas(params) as u32,
    }
}

/// Any tuple, as it travels between stages.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Tuple {
    /// A client command for a request source.
    Command(Submit),
    /// A request for the proposer of `view`: the view its source is in.
    Request {
        /// The view the source is in; the request goes to that view's proposer.
        view: u64,
        /// The request.
        request: Request,
    },
    /// A proposal.
    Propose(Propose),
    /// A commit.
    Commit(Commit),
    /// A reply.
    Reply(Reply),
    /// A reply to a command a front end forwarded ([`super::tuple::Command::origin`]): for the
    /// request source like [`Tuple::Reply`], and also for worker `origin`, whose front end waits
    /// for it. Of kind [`Kind::Reply`].
    Forwarded {
        /// The worker of the front end that took the command.
        origin: u32,
        /// The reply.
        reply: Reply,
    },
    /// An executed command (boxed: it is the largest tuple, and rare on the request path).
    Executed(Box<Executed>),
    /// A checkpoint announcement.
    Checkpoint(Checkpoint),
    /// A stability announcement.
    Stable(Stable),
    /// A state-transfer request.
    Fetch(Fetch),
    /// A state transfer.
    Transfer(Transfer),
    /// A repair request.
    Nack(Nack),
    /// A source's progress report.
    Target(Target),
    /// An executor's progress report.
    Actual(Actual),
    /// A view announcement.
    View(View),
    /// A committer's records.
    Record(Record),
}

impl Tuple {
    /// The tuple's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Tuple::Command(_) => Kind::Command,
            Tuple::Request { .. } => Kind::Request,
            Tuple::Propose(_) => Kind::Propose,
            Tuple::Commit(_) => Kind::Commit,
            Tuple::Reply(_) | Tuple::Forwarded { .. } => Kind::Reply,
            Tuple::Executed(_) => Kind::Executed,
            Tuple::Checkpoint(_) => Kind::Checkpoint,
            Tuple::Stable(_) => Kind::Stable,
            Tuple::Fetch(_) => Kind::Fetch,
            Tuple::Transfer(_) => Kind::Transfer,
            Tuple::Nack(_) => Kind::Nack,
            Tuple::Target(_) => Kind::Target,
            Tuple::Actual(_) => Kind::Actual,
            Tuple::View(_) => Kind::View,
            Tuple::Record(_) => Kind::Record,
        }
    }

    /// The receiving replica a [`To::Named`] tuple names.
    pub fn replica(&self) -> Option<u32> {
        match self {
            Tuple::Command(submit) => Some(submit.source),
            Tuple::Reply(reply) | Tuple::Forwarded { reply, .. } => Some(reply.source),
            Tuple::Fetch(fetch) => Some(fetch.to),
            Tuple::Transfer(transfer) => Some(transfer.to),
            _ => None,
        }
    }

    /// The partition a tuple belongs to: that of the partitioned replica that sent it (or, for
    /// a nack, the one it names). `None` for tuples of the shared stages and for commands.
    pub fn partition(&self, params: &Params) -> Option<u32> {
        let (stage, replica) = match self {
            Tuple::Request { request, .. } => (Stage::Source, request.source),
            Tuple::Propose(propose) => (Stage::Proposer, propose.proposer),
            Tuple::Commit(commit) => (Stage::Committer, commit.committer),
            Tuple::Record(record) => (Stage::Committer, record.committer),
            Tuple::View(view) => (Stage::Controller, view.controller),
            Tuple::Target(target) => (Stage::Source, target.source),
            Tuple::Nack(nack) => return Some(nack.partition),
            _ => return None,
        };
        Some(locate(stage, replica, params).0)
    }

    /// The worker of the front end a forwarded reply is also for.
    pub fn origin(&self) -> Option<u32> {
        if let Tuple::Forwarded { origin, .. } = self { Some(*origin) } else { None }
    }

    /// The reply a reply tuple carries, forwarded or not.
    pub fn into_reply(self) -> Option<Reply> {
        match self {
            Tuple::Reply(reply) | Tuple::Forwarded { reply, .. } => Some(reply),
            _ => None,
        }
    }

    /// The view whose leader a [`To::Leader`] tuple is for.
    pub fn view(&self) -> Option<u64> {
        match self {
            Tuple::Request { view, .. } => Some(*view),
            Tuple::Nack(nack) => Some(nack.view),
            Tuple::Record(record) => Some(record.view),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_kind_order_and_complete() {
        for (index, row) in ROUTES.iter().enumerate() {
            assert_eq!(row.kind as usize, index, "{:?}", row.kind);
            assert_eq!(row.to.is_empty(), row.to_whom == To::Out, "{:?}", row.kind);
        }
    }

    /// Every stage is fed and heard from, and the loops are the ones the paper names (Figure 3,
    /// Sections III-B to III-E).
    #[test]
    fn every_stage_has_inputs_and_outputs_and_the_loops_are_named() {
        for stage in Stage::ALL {
            assert!(inputs(stage).count() > 0 && outputs(stage).count() > 0, "{stage:?}");
        }
        let loops: Vec<(Kind, &str)> = ROUTES.iter().filter_map(|r| Some((r.kind, r.loop_name()?))).collect();
        assert_eq!(
            loops,
            vec![
                (Kind::Commit, "commit loop"),
                (Kind::Reply, "reply loop"),
                (Kind::Stable, "GC loop"),
                (Kind::Fetch, "state-transfer loop"),
                (Kind::Transfer, "state-transfer loop"),
                (Kind::Nack, "repair loop"),
                (Kind::View, "view loop"),
                (Kind::Record, "record loop"),
            ]
        );
    }

    /// Section III-C: proposer v mod (f+1) leads view v; requests, records and nacks go to it.
    #[test]
    fn leader_routes_follow_the_view() {
        let params = Params { f: 2, ..Params::default() };
        let nack = Tuple::Nack(Nack { executor: 0, partition: 0, view: 7, sequence: 3, fill: false });
        assert_eq!(destination(route(Kind::Nack), &nack, &params), Some(1));
        let fetch = Tuple::Fetch(Fetch { executor: 0, to: 2, sequence: 3 });
        assert_eq!(destination(route(Kind::Fetch), &fetch, &params), Some(2));
        let stable = Tuple::Stable(Stable { source: 0, sequence: 3 });
        assert_eq!(destination(route(Kind::Stable), &stable, &params), None);
        assert_eq!((0..6).map(|v| leader_of(v, 3)).collect::<Vec<_>>(), vec![0, 1, 2, 0, 1, 2]);
    }

    /// Host duty (Section III-E, "amnesia"): what depends on durable state waits for it.
    #[test]
    fn durable_dependencies() {
        let held: Vec<Kind> = ROUTES.iter().filter(|r| r.after_persist).map(|r| r.kind).collect();
        assert_eq!(held, vec![Kind::Propose, Kind::Commit, Kind::Checkpoint, Kind::Record]);
    }
}
