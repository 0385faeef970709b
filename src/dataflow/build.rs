//! [`tara`]: the whole TARA dataflow in a user's scope, wired from the topology table.

use std::collections::BTreeMap;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::feedback::Handle;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{ConnectLoop, Feedback};
use timely::dataflow::{Scope, Stream};

use super::deployment::{Deployment, Submit};
use super::host::{Input, Tuples};
use super::routed::{Routed, by_worker};
use super::{committer, controller, executor, gc, merge, proposer, source};
use crate::app::Application;
use crate::protocol::topology::{self, Kind, Tuple};
use crate::protocol::{Executed, Reply, Stage};

/// What a TARA dataflow produces.
pub struct TaraStreams<'s> {
    /// Every command each executor replica executed, in sequence order per replica (empty
    /// unless [`Deployment::emit_executed`]). Each command appears once per executor replica.
    pub executed: Stream<'s, u64, Vec<Executed>>,
    /// Every executor's reply to every command, delivered at the worker of the request source
    /// the command came through and, if a front end forwarded it, at that front end's worker.
    pub replies: Stream<'s, u64, Vec<Reply>>,
}

/// A feedback loop of tuples, and the stream that comes out of it.
type Loop<'s> = (Handle<'s, u64, Vec<Routed<Tuple>>>, Tuples<'s>);

/// The streams between stages by kind: those already built, and feedback loops for those whose
/// sender comes later in dataflow order.
struct Wires<'s> {
    scope: Scope<'s, u64>,
    built: BTreeMap<Kind, Tuples<'s>>,
    loops: BTreeMap<Kind, Loop<'s>>,
}

impl<'s> Wires<'s> {
    fn get(&mut self, kind: Kind) -> Tuples<'s> {
        if let Some(stream) = self.built.get(&kind) {
            return stream.clone();
        }
        let scope = self.scope;
        self.loops.entry(kind).or_insert_with(|| scope.feedback(1)).1.clone()
    }

    fn close_loops(mut self) {
        for (kind, (handle, _)) in std::mem::take(&mut self.loops) {
            let stream = self.built.remove(&kind).expect("every looped kind has a sender");
            stream.connect_loop(handle);
        }
    }
}

/// Builds the TARA dataflow (Figure 3 of the paper) in `scope`: one operator per stage, hosting
/// the replicas the placement puts on each worker, connected as [`topology::ROUTES`] says. The
/// request path runs forward; the reply, GC, view, record, state-transfer and repair paths are
/// feedback loops.
///
/// `submissions` carries client commands, each addressed to a request source; `app` creates the
/// application instance of each executor replica, at start and at every restart. Every worker of
/// the scope must call this function with the same deployment. Fails if the deployment is not
/// valid ([`Deployment::validate`]) or places a replica on a worker the scope does not have.
pub fn tara<'s, A: Application + 'static>(
    scope: Scope<'s, u64>,
    submissions: Stream<'s, u64, Vec<Submit>>,
    deployment: &Deployment,
    app: impl Fn(u32) -> A + 'static,
) -> Result<TaraStreams<'s>, String> {
    deployment.validate()?;
    deployment.placement.fits(scope.peers()).map_err(|e| e.0)?;
    let mut wires = Wires { scope, built: BTreeMap::new(), loops: BTreeMap::new() };
    let (reply_loop, replies_back) = scope.feedback::<Vec<Reply>>(1);
    let mut app = Some(app);
    for stage in Stage::ALL {
        let inputs = topology::inputs(stage)
            .map(|route| match route.kind {
                Kind::Command => Input::Commands(submissions.clone()),
                Kind::Reply => Input::Replies(replies_back.clone()),
                // Section IV: commits pass the Merge on their way into the executors.
                Kind::Commit if stage == Stage::Executor => {
                    Input::Routed(Kind::Commit, merge::operator(wires.get(Kind::Commit), deployment))
                }
                // Proposers count commits only for a `max_in_flight` below the window: at the
                // window the bound is implied by the window itself, so the copies would be waste.
                Kind::Commit if stage == Stage::Proposer && !deployment.params.in_flight_bounded() => {
                    Input::Routed(Kind::Commit, timely::dataflow::operators::generic::operator::empty(scope))
                }
                kind => Input::Routed(kind, wires.get(kind)),
            })
            .collect();
        let outputs = match stage {
            Stage::Source => source::operator(scope, inputs, deployment),
            Stage::Proposer => proposer::operator(scope, inputs, deployment),
            Stage::Committer => committer::operator(scope, inputs, deployment),
            Stage::Executor => executor::operator(scope, inputs, deployment, app.take().expect("one executor stage")),
            Stage::Gc => gc::operator(scope, inputs, deployment),
            Stage::Controller => controller::operator(scope, inputs, deployment),
        };
        wires.built.extend(outputs);
    }
    let replies = delivered_replies(wires.built.remove(&Kind::Reply).expect("executors reply"));
    replies.clone().connect_loop(reply_loop);
    let executed =
        wires.built.remove(&Kind::Executed).expect("executors execute").flat_map(|routed| match routed.tuple {
            Tuple::Executed(executed) => Some(*executed),
            _ => None,
        });
    wires.close_loops();
    Ok(TaraStreams { executed, replies })
}

/// Replies, at the worker of the request source each names (its reply sink), and forwarded
/// ones also at the worker of the front end that took the command.
fn delivered_replies(routed: Tuples<'_>) -> Stream<'_, u64, Vec<Reply>> {
    routed.unary::<CapacityContainerBuilder<Vec<Reply>>, _, _, _>(by_worker(), "Replies", |_, _| {
        |input, output| {
            input.for_each(|cap, data| {
                let replies = data.drain(..).filter_map(|r| r.tuple.into_reply());
                output.session(&cap).give_iterator(replies);
            })
        }
    })
}
