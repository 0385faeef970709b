//! What every timely worker of a cluster process runs: ingress, the TARA dataflow, egress.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Sender;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::worker::Worker;

use crate::app::Application;
use crate::dataflow::{Control, Deployment, Ingress, Mailboxes, egress, ingress, tara};
use crate::protocol::Executed;

/// How long an idle worker of an embedded cluster spins before it parks, in microseconds
/// (timely's own default): its clients are threads of the same process, whose next commands
/// often come within it.
pub const EMBEDDED_IDLE_SPIN_US: u64 = 10;

/// How long an idle worker of a multi-process cluster spins before it parks: not at all. What
/// it waits for is a message from another process, which takes longer than any short spin, and
/// a spinning worker takes cycles from the network and writer threads that carry that message
/// (three local processes on 2 cores: 1 client 1.8k -> 2.1k ops/s, 64 clients 81k -> 97k).
pub const PROCESS_IDLE_SPIN_US: u64 = 0;

/// Timely's worker configuration: the idle spin, from `TARA_IDLE_SPIN_US` if set, else
/// `default_us`. Measure before changing it: spinning helps when workers have cores to
/// themselves and hurts when they share.
pub(crate) fn worker_config(default_us: u64) -> timely::WorkerConfig {
    let spin_us = std::env::var("TARA_IDLE_SPIN_US").ok().and_then(|v| v.parse().ok()).unwrap_or(default_us);
    timely::WorkerConfig::default().idle_spin(std::time::Duration::from_micros(spin_us))
}

/// Everything the workers of one process share.
pub(crate) struct Setup<F> {
    pub(crate) deployment: Deployment,
    pub(crate) ingress: Arc<Ingress>,
    pub(crate) mailboxes: Arc<Mailboxes>,
    pub(crate) app: Arc<F>,
    pub(crate) executed: Option<Sender<Executed>>,
    /// Set when a worker panics, so that the others return instead of waiting for it.
    pub(crate) aborted: Arc<AtomicBool>,
}

/// Sets the abort flag if a worker thread panics.
struct AbortOnPanic(Arc<AtomicBool>, Arc<Control>);

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Release);
            self.1.stop();
        }
    }
}

/// Builds the dataflow on this worker and runs it until it completes (after a stop) or a
/// worker of this process panicked.
pub(crate) fn run<A, F>(worker: &mut Worker, setup: &Setup<F>)
where
    A: Application + 'static,
    F: Fn(u32) -> A + Send + Sync + 'static,
{
    let _guard = AbortOnPanic(setup.aborted.clone(), setup.deployment.control.clone());
    worker.dataflow::<u64, _, _>(|scope| {
        let submissions = ingress(scope, &setup.ingress, &setup.deployment);
        let app = setup.app.clone();
        // The deployment was validated before the workers started.
        let Ok(streams) = tara(scope, submissions, &setup.deployment, move |id| app(id)) else { return };
        egress(streams.replies, &setup.mailboxes);
        if let Some(sender) = setup.executed.clone() {
            streams.executed.sink(Pipeline, "ExecutedSink", move |(input, _)| {
                input.for_each(|_, data| data.drain(..).for_each(|x| drop(sender.send(x))));
            });
        }
    });
    while !setup.aborted.load(Ordering::Acquire) && worker.step_or_park(None) {}
}
