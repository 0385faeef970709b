//! The time an operator emits at, its timers, and how it stops.
//!
//! TARA is an asynchronous protocol: the order of events is carried by sequence numbers, not by
//! timely timestamps. Timestamps here serve two purposes only: progress tracking, so that an
//! embedding dataflow sees its frontier advance, and cheap delivery. Every operator that hosts a
//! replica holds one capability per output at the current *epoch* (milliseconds since the
//! dataflow started, rounded down to the epoch length) and downgrades it as wall-clock time
//! passes, never to a fixed time forever. It emits at `epoch + 1`: a message strictly after a
//! capability its sender still holds cannot move any frontier, so timely's demand-driven
//! progress tracking does not broadcast a progress update per message (`papers/timely.md`). Progress
//! traffic is then one round per epoch, whatever the message rate.

use std::sync::Arc;
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::scheduling::Activator;

use super::control::Control;

/// Per-operator time keeping: capabilities, epoch, timers and the stop signal.
pub struct Pulse {
    caps: Vec<Capability<u64>>,
    activator: Activator,
    control: Arc<Control>,
    epoch_ms: u64,
    timer_at_us: Option<u64>,
    now_us: u64,
}

impl Pulse {
    /// Takes the operator's initial capabilities. An operator that hosts no replica passes
    /// `hosting = false` and drops them at once: it never emits and must not hold anyone back.
    pub fn new(
        caps: Vec<Capability<u64>>,
        activator: Activator,
        control: Arc<Control>,
        epoch_ms: u64,
        hosting: bool,
    ) -> Pulse {
        let caps = if hosting { caps } else { Vec::new() };
        let pulse = Pulse { caps, activator, control, epoch_ms: epoch_ms.max(1), timer_at_us: None, now_us: 0 };
        if hosting {
            pulse.activator.activate();
        }
        pulse
    }

    /// Starts an activation: reads the clock, advances the capabilities to the current epoch,
    /// and returns false if the operator has stopped (it then only drains its inputs).
    pub fn begin(&mut self) -> bool {
        self.now_us = self.control.now_us();
        if self.timer_at_us.is_some_and(|t| t <= self.now_us) {
            self.timer_at_us = None;
        }
        if self.caps.is_empty() {
            return false;
        }
        let epoch = self.now_us / 1000 / self.epoch_ms * self.epoch_ms;
        if epoch > *self.caps[0].time() {
            for cap in self.caps.iter_mut() {
                cap.downgrade(&epoch);
            }
        }
        true
    }

    /// True once the dataflow is asked to stop; the operator should publish final counters and
    /// call [`Pulse::release`].
    pub fn stopping(&self) -> bool {
        !self.caps.is_empty() && self.control.stopped()
    }

    /// Drops every capability: the operator will never emit again.
    pub fn release(&mut self) {
        self.caps.clear();
    }

    /// The clock reading of this activation, in microseconds since the dataflow started.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// A capability to emit on `output` at the current epoch plus one.
    pub fn send_cap(&self, output: usize) -> Option<Capability<u64>> {
        let cap = self.caps.get(output)?;
        Some(cap.delayed(&(cap.time() + 1)))
    }

    /// Ends an activation: makes sure the operator wakes up at `deadline_us` (if any) and at the
    /// next epoch boundary, so that its capabilities keep advancing when it is idle.
    pub fn end(&mut self, deadline_us: Option<u64>) {
        if self.caps.is_empty() {
            return;
        }
        let next_epoch_us = (self.now_us / 1000 / self.epoch_ms + 1) * self.epoch_ms * 1000;
        let wake_us = deadline_us.map_or(next_epoch_us, |d| d.min(next_epoch_us));
        if self.timer_at_us.is_some_and(|t| t <= wake_us) {
            return;
        }
        self.timer_at_us = Some(wake_us);
        self.activator.activate_after(Duration::from_micros(wake_us.saturating_sub(self.now_us)));
    }
}

/// An operator output that builds vectors of `T`.
pub type Out<T> = OutputBuilder<u64, CapacityContainerBuilder<Vec<T>>>;

/// Emits `items` on `output` with `cap`, opening a session only if there is something to send.
pub fn give<T: 'static>(output: &mut Out<T>, cap: Option<Capability<u64>>, items: impl Iterator<Item = T>) {
    let mut items = items.peekable();
    let Some(cap) = cap else { return };
    if items.peek().is_none() {
        return;
    }
    let mut session = output.activate();
    session.session(&cap).give_iterator(items);
}
