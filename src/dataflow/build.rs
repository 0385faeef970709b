//! [`tara`]: the whole TARA dataflow in a user's scope.

use timely::dataflow::operators::Exchange as _;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{ConnectLoop, Feedback};
use timely::dataflow::{Scope, Stream};

use super::committer::committers;
use super::deployment::{Deployment, Submit};
use super::executor::{ExecutorInputs, executors};
use super::gc::gc_sources;
use super::proposer::proposers;
use super::routed::Routed;
use super::source::request_sources;
use crate::app::Application;
use crate::protocol::{Executed, Reply};

/// What a TARA dataflow produces.
pub struct TaraStreams<'s> {
    /// Every command each executor replica executed, in sequence order per replica (empty
    /// unless [`Deployment::emit_executed`]). Each command appears once per executor replica;
    /// [`super::executed::executed_once`] keeps one copy.
    pub executed: Stream<'s, u64, Vec<Executed>>,
    /// Every executor's reply to every command, delivered at the worker of the request source
    /// the command came through (where its client's front end waits).
    pub replies: Stream<'s, u64, Vec<Reply>>,
}

/// Builds the TARA dataflow (Figure 3 of the paper) in `scope`: request sources, proposers,
/// committers and executors on the request path, garbage-collection sources on a feedback loop
/// from executors back to every stage, a state-transfer loop among executors, and a repair loop
/// from executors back to the proposers.
///
/// `submissions` carries client commands, each addressed to a request source; `app` creates the
/// application instance of each executor replica, at start and at every restart. Every worker of the scope must call this
/// function with the same deployment; the placement decides which worker hosts which replica.
pub fn tara<'s, A: Application + 'static>(
    scope: Scope<'s, u64>,
    submissions: Stream<'s, u64, Vec<Submit>>,
    deployment: &Deployment,
    app: impl Fn(u32) -> A + 'static,
) -> TaraStreams<'s> {
    let (stable_loop, stable) = scope.feedback(1);
    let (fetch_loop, fetches) = scope.feedback(1);
    let (transfer_loop, transfers) = scope.feedback(1);
    let (nack_loop, nacks) = scope.feedback(1);

    let requests = request_sources(submissions, deployment);
    let proposals = proposers(requests, stable.clone(), nacks, deployment);
    let commits = committers(proposals, stable.clone(), deployment);
    let inputs = ExecutorInputs { commits, stable, fetches, transfers };
    let out = executors(inputs, deployment, app);
    out.fetches.connect_loop(fetch_loop);
    out.transfers.connect_loop(transfer_loop);
    out.nacks.connect_loop(nack_loop);
    gc_sources(out.checkpoints, deployment).connect_loop(stable_loop);

    let replies = out.replies.exchange(|r: &Routed<Reply>| r.worker as u64).map(|r| r.tuple);
    TaraStreams { executed: out.executed, replies }
}
