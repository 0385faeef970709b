//! The differential-dataflow adapter: executed commands as a collection of state changes.
//!
//! The collection's times are those of the exactly-once executed stream, which never decrease
//! along the log: at any frontier the collection (and every view computed from it) reflects
//! exactly the commands at positions `0..p` of the log for some `p`, never a torn state.

use differential_dataflow::{AsCollection, VecCollection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::updates::StateUpdates;
use crate::protocol::Executed;

/// Turns a stream of executed commands into a collection of `((key, value), time, diff)`.
///
/// Feed it [`crate::embed::Embedded::executed`] (each command once, in log order); the stream
/// of one executor replica works too, but not [`crate::dataflow::TaraStreams::executed`], which
/// carries each command once per replica.
///
/// ```
/// use tara::app::kv::{KvOp, KvStore};
/// use tara::dataflow::{Deployment, Placement, Submit};
/// use tara::embed::{AsStateUpdates, KvUpdates, embed, step_until_stopped};
/// use tara::protocol::{Command, Params};
/// use tara::timely::dataflow::operators::Input;
///
/// let params = Params::default();
/// let deployment = Deployment::new(params.clone(), Placement::spread(&params, 1, 1).unwrap())
///     .durable_records(false);
/// let control = deployment.control.clone();
/// tara::timely::execute_directly(move |worker| {
///     let (tx, rx) = std::sync::mpsc::channel();
///     let mut input = worker.dataflow::<u64, _, _>(|scope| {
///         let (input, submissions) = scope.new_input::<Vec<Submit>>();
///         let tara = embed(scope, submissions, &deployment, |_| KvStore::default()).unwrap();
///         // How many keys hold each value, kept up to date as commands execute.
///         tara.executed
///             .as_state_updates(KvUpdates::default())
///             .map(|(_key, value)| value)
///             .count()
///             .inspect(move |update| tx.send(update.clone()).unwrap());
///         input
///     });
///     for (t, key) in ["a", "b"].into_iter().enumerate() {
///         let put = KvOp::Put { key: key.into(), value: b"x".to_vec() }.encode();
///         input.send(Submit { source: 0, command: Command::new(1, t as u64 + 1, put) });
///     }
///     input.flush();
///     let mut count = 0;
///     while count != 2 {
///         worker.step();
///         // A retraction and an insertion when the count changes from 1 to 2.
///         for ((_value, n), _time, diff) in rx.try_iter() {
///             if diff > 0 { count = n; }
///         }
///     }
///     control.stop();
///     step_until_stopped(worker, &control, input);
/// });
/// ```
pub trait AsStateUpdates<'s> {
    /// The state changes `updates` derives from each executed command, at its time.
    // Named after differential's `as_collection`, which also takes the stream by value.
    #[allow(clippy::wrong_self_convention)]
    fn as_state_updates<U: StateUpdates>(self, updates: U) -> VecCollection<'s, u64, (U::Key, U::Value), isize>
    where
        U::Key: Clone + 'static,
        U::Value: Clone + 'static;
}

impl<'s> AsStateUpdates<'s> for Stream<'s, u64, Vec<Executed>> {
    fn as_state_updates<U: StateUpdates>(self, mut updates: U) -> VecCollection<'s, u64, (U::Key, U::Value), isize>
    where
        U::Key: Clone + 'static,
        U::Value: Clone + 'static,
    {
        let mut changes = Vec::new();
        self.unary::<CapacityContainerBuilder<Vec<_>>, _, _, _>(Pipeline, "StateUpdates", move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    data.iter().for_each(|executed| updates.updates(executed, &mut changes));
                    let time = *cap.least().expect("a message has a time");
                    output.session(&cap).give_iterator(changes.drain(..).map(|(d, r)| (d, time, r)));
                })
            }
        })
        .as_collection()
    }
}
