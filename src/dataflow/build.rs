//! [`tara`]: the whole TARA dataflow in a user's scope.

use timely::dataflow::operators::Exchange as _;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{ConnectLoop, Feedback};
use timely::dataflow::{Scope, Stream};

use super::committer::committers;
use super::controller::controllers;
use super::deployment::{Deployment, Submit};
use super::executor::{ExecutorInputs, executors};
use super::gc::gc_sources;
use super::proposer::{ProposerInputs, proposers};
use super::routed::Routed;
use super::source::request_sources;
use crate::app::Application;
use crate::protocol::{Executed, Reply};

/// What a TARA dataflow produces.
pub struct TaraStreams<'s> {
    /// Every command each executor replica executed, in sequence order per replica (empty
    /// unless [`Deployment::emit_executed`]). Each command appears once per executor replica.
    pub executed: Stream<'s, u64, Vec<Executed>>,
    /// Every executor's reply to every command, delivered at the worker of the request source
    /// the command came through (where its client's front end waits).
    pub replies: Stream<'s, u64, Vec<Reply>>,
}

/// Builds the TARA dataflow (Figure 3 of the paper) in `scope`: request sources, proposers,
/// committers and executors on the request path; garbage-collection sources on a feedback loop
/// from executors back to every stage; controllers on the view loop; committers' records on the
/// record loop to the proposers; a state-transfer loop among executors; a repair loop from
/// executors back to the proposers; and the replies looping back to the sources, which resend
/// what stays unanswered.
///
/// `submissions` carries client commands, each addressed to a request source; `app` creates the
/// application instance of each executor replica, at start and at every restart. Every worker of
/// the scope must call this function with the same deployment; the placement decides which
/// worker hosts which replica.
pub fn tara<'s, A: Application + 'static>(
    scope: Scope<'s, u64>,
    submissions: Stream<'s, u64, Vec<Submit>>,
    deployment: &Deployment,
    app: impl Fn(u32) -> A + 'static,
) -> TaraStreams<'s> {
    let (stable_loop, stable) = scope.feedback(1);
    let (view_loop, views) = scope.feedback(1);
    let (record_loop, records) = scope.feedback(1);
    let (reply_loop, replies_back) = scope.feedback(1);
    let (fetch_loop, fetches) = scope.feedback(1);
    let (transfer_loop, transfers) = scope.feedback(1);
    let (nack_loop, nacks) = scope.feedback(1);

    let sources = request_sources(submissions, replies_back, views.clone(), deployment);
    let inputs =
        ProposerInputs { requests: sources.requests, stable: stable.clone(), nacks, views: views.clone(), records };
    let proposals = proposers(inputs, deployment);
    let committed = committers(proposals, stable.clone(), views.clone(), deployment);
    committed.records.connect_loop(record_loop);
    let inputs = ExecutorInputs { commits: committed.commits, stable, fetches, transfers, views: views.clone() };
    let out = executors(inputs, deployment, app);
    out.fetches.connect_loop(fetch_loop);
    out.transfers.connect_loop(transfer_loop);
    out.nacks.connect_loop(nack_loop);
    gc_sources(out.checkpoints, deployment).connect_loop(stable_loop);
    controllers(sources.targets, out.actuals, views, deployment).connect_loop(view_loop);

    let replies = out.replies.exchange(|r: &Routed<Reply>| r.worker as u64).map(|r| r.tuple);
    replies.clone().connect_loop(reply_loop);
    TaraStreams { executed: out.executed, replies }
}
