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
//!
//! An idle cluster should cost nothing. An operator wakes after an activation that sent
//! something (so that its capabilities pass what it sent), at its replicas' deadlines, and at
//! least every [`IDLE_TICK_MS`]; and while no new client work reached the process for
//! [`IDLE_EPOCH_MS`], the epoch itself is that long, so the frontier of an idle dataflow moves
//! once a second instead of once per `epoch_ms`, and an idle tick moves nothing.

use std::sync::Arc;
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::scheduling::Activator;

use super::control::Control;

/// The longest an idle operator sleeps (no tuples in or out, no replica deadline): an idle
/// cluster costs a few activations per second instead of one per epoch per operator. It bounds
/// how late an injected fault or a stop is noticed by an idle operator; 100 ms cost an idle
/// process of `dataflows/local-f1.toml` 0.9 to 1.1% of a core, 250 ms 0.7 to 0.9%.
pub const IDLE_TICK_MS: u64 = 250;

/// The epoch of an idle process (no new client work for this long): its frontier moves once
/// per idle epoch.
pub const IDLE_EPOCH_MS: u64 = 1000;

/// Per-operator time keeping: capabilities, epoch, timers and the stop signal.
pub struct Pulse {
    caps: Vec<Capability<u64>>,
    activator: Activator,
    control: Arc<Control>,
    epoch_ms: u64,
    /// The epoch length of this activation: `epoch_ms` while the request path is busy,
    /// [`IDLE_EPOCH_MS`] while it is idle.
    epoch_us: u64,
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
        let epoch_ms = epoch_ms.max(1);
        let epoch_us = epoch_ms * 1000;
        let pulse = Pulse { caps, activator, control, epoch_ms, epoch_us, timer_at_us: None, now_us: 0 };
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
        // An idle process moves its frontier once per idle tick, not once per epoch: operators
        // that timely wakes because a frontier moved then find nothing to downgrade, so a
        // heartbeat does not ripple through every operator of every worker.
        let idle_us = IDLE_EPOCH_MS.max(self.epoch_ms) * 1000;
        let busy = self.control.active_within(self.now_us, idle_us);
        self.epoch_us = if busy { self.epoch_ms * 1000 } else { idle_us };
        let epoch = self.now_us / self.epoch_us * self.epoch_us / 1000;
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

    /// Ends an activation. After one that sent tuples the operator wakes at the next epoch
    /// boundary, so that its capabilities pass what it sent (what it only received needs no
    /// tick: its senders' own ticks move the frontier, and timely activates this operator when
    /// its input frontier moves). Its replicas' `deadline_us` (a time already past: the next
    /// epoch) wakes it sooner or, once it is idle, at all. An idle operator without deadlines
    /// still wakes every [`IDLE_TICK_MS`], so that injected faults take effect and a missed
    /// timer costs time, never liveness.
    pub fn end(&mut self, deadline_us: Option<u64>, sent: bool) {
        if self.caps.is_empty() {
            return;
        }
        let epoch_us = self.epoch_us;
        let next_epoch_us = (self.now_us / epoch_us + 1) * epoch_us;
        let timer_us = deadline_us.map(|d| if d <= self.now_us { next_epoch_us } else { d });
        // On a shared boundary, so that one wake-up of the worker serves all its idle operators.
        let idle_us = (self.now_us / (IDLE_TICK_MS * 1000) + 1) * IDLE_TICK_MS * 1000;
        let latest_us = if sent { next_epoch_us } else { idle_us };
        let wake_us = timer_us.map_or(latest_us, |t| t.min(latest_us));
        if self.timer_at_us.is_some_and(|t| t > self.now_us && t <= wake_us) {
            return;
        }
        self.timer_at_us = Some(wake_us);
        self.activator.activate_after(Duration::from_micros(wake_us.saturating_sub(self.now_us)));
    }
}

/// An operator output that builds vectors of `T`.
pub type Out<T> = OutputBuilder<u64, CapacityContainerBuilder<Vec<T>>>;

/// Emits `items` on `output` with `cap`, opening a session only if there is something to send;
/// true if something was sent.
pub fn give<T: 'static>(output: &mut Out<T>, cap: Option<Capability<u64>>, items: impl Iterator<Item = T>) -> bool {
    let mut items = items.peekable();
    let Some(cap) = cap else { return false };
    if items.peek().is_none() {
        return false;
    }
    let mut session = output.activate();
    session.session(&cap).give_iterator(items);
    true
}
