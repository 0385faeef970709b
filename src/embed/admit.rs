//! Admission: the user's submissions enter TARA here, on TARA's own clock.
//!
//! The operator's input is connected to none of its outputs, so the time at which the user
//! sends a submission (left at 0, advanced once, or advanced by the wall clock) never holds
//! back a frontier of TARA: admitted submissions go out at the operator's own epoch, as every
//! stage emits ([`crate::dataflow::pulse`]). A submission addressed to a request source that
//! does not exist is rejected here, with the reason, instead of being lost further on.

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};
use timely::progress::Antichain;

use crate::dataflow::pulse::{Pulse, give};
use crate::dataflow::{Deployment, IngressError, Stage, Submit};

/// A submission that did not enter TARA, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The submission, unchanged (resend it to an existing request source).
    pub submit: Submit,
    /// Why it was rejected.
    pub error: IngressError,
}

/// Admits `submissions` into TARA on TARA's clock; returns the admitted and the rejected.
pub fn admit<'s>(
    scope: Scope<'s, u64>,
    submissions: Stream<'s, u64, Vec<Submit>>,
    deployment: &Deployment,
) -> (Stream<'s, u64, Vec<Submit>>, Stream<'s, u64, Vec<Rejected>>) {
    let mut builder = OperatorBuilder::new("Admit".to_owned(), scope);
    let info = builder.operator_info();
    // No connection to any output: the user's input times do not bound TARA's frontiers.
    let mut input = builder.new_input_connection(submissions, Pipeline, []);
    let none = || std::iter::empty::<(usize, Antichain<u64>)>();
    let (admitted, admitted_stream) = builder.new_output_connection(none());
    let (rejected, rejected_stream) = builder.new_output_connection(none());
    let (mut admitted, mut rejected) = (OutputBuilder::from(admitted), OutputBuilder::from(rejected));
    let sources = deployment.placement.stage(Stage::Source).len() as u32;
    let (control, epoch_ms) = (deployment.control.clone(), deployment.epoch_ms);
    let activator = scope.activator_for(info.address.clone());
    builder.build(move |caps| {
        let mut pulse = Pulse::new(caps, activator, control, epoch_ms, true);
        move |_frontiers| {
            let alive = pulse.begin();
            let (mut ok, mut bad) = (Vec::new(), Vec::new());
            input.for_each(|_, data| {
                for submit in data.drain(..).filter(|_| alive) {
                    match submit.source < sources {
                        true => ok.push(submit),
                        false => {
                            let error = IngressError::NoSuchSource(submit.source);
                            tracing::warn!("submission rejected: {error} (there are {sources})");
                            bad.push(Rejected { submit, error });
                        }
                    }
                }
            });
            if !alive {
                return;
            }
            let sent = give(&mut admitted, pulse.send_cap(0), ok.into_iter())
                | give(&mut rejected, pulse.send_cap(1), bad.into_iter());
            if pulse.stopping() {
                pulse.release();
            }
            pulse.end(None, sent);
        }
    });
    (admitted_stream, rejected_stream)
}
