//! The garbage-collection source stage (Section III-D): computes the stability threshold.

use super::params::Params;
use super::quorum::Announced;
use super::replica::{Counters, Outbox, Recovered, Repeat, Replica};
use super::topology::{Stage, Tuple};
use super::tuple::{Checkpoint, Stable};

/// Garbage-collection source replica `g` (2f+1 of them).
///
/// It keeps the highest checkpoint reported by each executor and selects the stability
/// threshold as the (f+1)-th highest: at least one copy of that checkpoint survives f crashes.
/// Whenever the threshold rises it emits `<STABLE, g, s>` to every proposer, committer and
/// executor; it also repeats the current threshold periodically so that a replica that missed
/// a tuple or restarted learns it (receivers treat repeats as no-ops).
#[derive(Debug)]
pub struct GcSource {
    id: u32,
    checkpoints: Announced,
    /// Repeats of the threshold: every 100 ms after a rise, backing off while it stays.
    repeat: Repeat,
}

impl GcSource {
    /// Garbage-collection source `id` of a deployment with `params`.
    pub fn new(id: u32, params: &Params) -> GcSource {
        GcSource {
            id,
            checkpoints: Announced::new(params.executors(), params.quorum(), 0),
            repeat: Repeat::new(100_000),
        }
    }

    /// The current stability threshold.
    pub fn threshold(&self) -> u64 {
        self.checkpoints.adopted()
    }

    /// A checkpoint notification: emits a stable tuple if the threshold rose.
    pub fn on_checkpoint(&mut self, checkpoint: Checkpoint, now_us: u64, out: &mut Outbox) {
        if self.checkpoints.report(checkpoint.executor, checkpoint.sequence).is_some() {
            self.announce(now_us, out);
        }
    }

    fn announce(&mut self, now_us: u64, out: &mut Outbox) {
        self.repeat.sent(now_us, Some(self.threshold()));
        out.stable.push(Stable { source: self.id, sequence: self.threshold() });
    }
}

impl Replica for GcSource {
    fn stage(&self) -> Stage {
        Stage::Gc
    }

    fn id(&self) -> u32 {
        self.id
    }

    fn on_tuple(&mut self, tuple: Tuple, now_us: u64, out: &mut Outbox) -> bool {
        match tuple {
            Tuple::Checkpoint(checkpoint) => self.on_checkpoint(checkpoint, now_us, out),
            _ => return false,
        }
        true
    }

    /// Time passed: repeats a non-zero threshold that has not been announced for a while.
    fn on_tick(&mut self, now_us: u64, out: &mut Outbox) {
        if self.threshold() > 0 && self.repeat.due(now_us, Some(self.threshold())) {
            out.stable.push(Stable { source: self.id, sequence: self.threshold() });
        }
    }

    /// The next repetition of the threshold, once there is one.
    fn deadline_us(&self) -> Option<u64> {
        (self.threshold() > 0).then(|| self.repeat.next_us())
    }

    /// Keeps nothing durable: executors repeat their checkpoint announcements.
    fn resume(&mut self, _recovered: Recovered) -> Result<(), String> {
        Ok(())
    }

    fn counters(&self) -> Counters {
        Counters { stable: self.threshold(), ..Counters::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Section III-D: the threshold is the (f+1)-th highest checkpoint of distinct executors.
    #[test]
    fn announces_when_f_plus_one_executors_checkpointed() {
        let mut g = GcSource::new(1, &Params::default());
        let mut out = Outbox::default();
        g.on_checkpoint(Checkpoint { executor: 0, sequence: 128 }, 0, &mut out);
        assert!(out.stable.is_empty());
        g.on_checkpoint(Checkpoint { executor: 2, sequence: 256 }, 0, &mut out);
        assert_eq!(out.stable, vec![Stable { source: 1, sequence: 128 }]);
        g.on_checkpoint(Checkpoint { executor: 0, sequence: 384 }, 0, &mut out);
        assert_eq!(out.stable.last(), Some(&Stable { source: 1, sequence: 256 }));
    }

    #[test]
    fn repeats_the_threshold_periodically() {
        let mut g = GcSource::new(0, &Params::default());
        let mut out = Outbox::default();
        g.on_tick(1_000_000, &mut out);
        assert!(out.stable.is_empty(), "nothing to repeat yet");
        g.on_checkpoint(Checkpoint { executor: 0, sequence: 128 }, 0, &mut out);
        g.on_checkpoint(Checkpoint { executor: 1, sequence: 128 }, 0, &mut out);
        g.on_tick(50_000, &mut out);
        assert_eq!(out.stable.len(), 1);
        g.on_tick(100_000, &mut out);
        assert_eq!(out.stable.len(), 2);
    }
}
