//! The request source stage (Section III-C): wraps client commands into numbered requests.

use std::sync::Arc;

use super::mutation::{self, Mutation};
use super::params::Params;
use super::tuple::{Command, Request};

/// Request source replica `r`: numbers requests `<REQUEST, r, q, cmds>` and sends them to the
/// active proposer of its current view.
///
/// Commands are batched (Section VI-B): a request is sent when it holds `batch_size` commands,
/// or on a tick once its oldest command waited `batch_timeout_us`. With a timeout of zero a
/// partial batch goes out at every tick, that is whenever the host has drained its input: the
/// batch then holds what arrived while the previous one was being sent, which keeps latency low
/// under light load and batches large under heavy load.
#[derive(Debug)]
pub struct RequestSource {
    id: u32,
    proposers: u64,
    batch_size: usize,
    batch_timeout_us: u64,
    view: u64,
    next_number: u64,
    batch: Vec<Command>,
    batch_started_us: u64,
    mutation: Option<Mutation>,
}

impl RequestSource {
    /// Source replica `id` of a deployment with `params`.
    pub fn new(id: u32, params: &Params) -> RequestSource {
        RequestSource {
            id,
            proposers: params.proposers() as u64,
            batch_size: params.batch_size,
            batch_timeout_us: params.batch_timeout_us,
            view: 0,
            next_number: 1,
            batch: Vec::with_capacity(params.batch_size),
            batch_started_us: 0,
            mutation: None,
        }
    }

    /// Breaks this replica on purpose (tests of the simulator only).
    #[cfg(feature = "mutations")]
    pub fn mutate(mut self, mutation: Mutation) -> Self {
        self.mutation = Some(mutation);
        self
    }

    /// This replica's index.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Commands waiting in the current batch (state held, for metrics and bounds).
    pub fn held(&self) -> usize {
        self.batch.len()
    }

    /// The highest request number assigned so far (`q` of the paper's TARGET tuple), 0 if none.
    pub fn highest_number(&self) -> u64 {
        self.next_number - 1
    }

    /// The proposer that requests go to: p = v mod (f+1) (Section III-C).
    pub fn active_proposer(&self) -> u32 {
        (self.view % self.proposers) as u32
    }

    /// Accepts a client command; emits `(proposer, request)` once the batch is full.
    pub fn on_command(&mut self, command: Command, now_us: u64, out: &mut Vec<(u32, Request)>) {
        if self.batch.is_empty() {
            self.batch_started_us = now_us;
        }
        self.batch.push(command);
        if self.batch.len() >= self.batch_size {
            self.flush(out);
        }
    }

    /// Time passed or the host drained its input: sends a partial batch that waited long enough.
    pub fn on_tick(&mut self, now_us: u64, out: &mut Vec<(u32, Request)>) {
        if !self.batch.is_empty() && now_us.saturating_sub(self.batch_started_us) >= self.batch_timeout_us {
            self.flush(out);
        }
    }

    /// When the host should tick next, if a partial batch is waiting.
    pub fn next_deadline_us(&self) -> Option<u64> {
        (!self.batch.is_empty()).then(|| self.batch_started_us + self.batch_timeout_us)
    }

    fn flush(&mut self, out: &mut Vec<(u32, Request)>) {
        if mutation::applies(self.mutation, Mutation::SourceNeverFlushes) {
            return;
        }
        let commands: Arc<[Command]> =
            Arc::from(std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_size)));
        let request = Request { source: self.id, number: self.next_number, commands };
        self.next_number += 1;
        out.push((self.active_proposer(), request));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(t: u64) -> Command {
        Command::new(1, t, vec![t as u8])
    }

    fn source(batch_size: usize, batch_timeout_us: u64) -> RequestSource {
        RequestSource::new(1, &Params { batch_size, batch_timeout_us, ..Params::default() })
    }

    /// Section III-C: requests carry the source id and increasing numbers q.
    #[test]
    fn numbers_requests_in_order() {
        let mut s = source(1, 0);
        let mut out = Vec::new();
        for t in 1..=3 {
            s.on_command(command(t), 0, &mut out);
        }
        let numbers: Vec<(u32, u32, u64)> = out.iter().map(|(p, r)| (*p, r.source, r.number)).collect();
        assert_eq!(numbers, vec![(0, 1, 1), (0, 1, 2), (0, 1, 3)]);
        assert_eq!(s.highest_number(), 3);
    }

    /// Section VI-B: a full batch goes out at once; a partial one after the timeout.
    #[test]
    fn batches_by_size_then_by_timeout() {
        let mut s = source(3, 100);
        let mut out = Vec::new();
        for t in 1..=4 {
            s.on_command(command(t), 10, &mut out);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.commands.len(), 3);
        assert_eq!(s.next_deadline_us(), Some(110));
        s.on_tick(109, &mut out);
        assert_eq!(out.len(), 1, "partial batch must wait for the timeout");
        s.on_tick(110, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].1.commands.iter().map(|c| c.timestamp).collect::<Vec<_>>(), vec![4]);
        assert_eq!(s.next_deadline_us(), None);
    }

    #[test]
    fn zero_timeout_sends_at_every_tick() {
        let mut s = source(64, 0);
        let mut out = Vec::new();
        s.on_command(command(1), 5, &mut out);
        s.on_command(command(2), 5, &mut out);
        assert!(out.is_empty());
        s.on_tick(5, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.commands.len(), 2);
    }
}
