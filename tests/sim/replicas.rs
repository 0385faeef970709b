//! Hosting the simulated replicas the way the timely stage host does: the same `Replica` trait,
//! the same topology table for routing, and the same storage layer (persist, then release) over
//! an in-memory disk, whose writes complete when the simulation says so.

use std::path::Path;
use std::sync::Arc;

use rand::Rng;
use tara::app::kv::KvStore;
use tara::protocol::mutation::Mutation;
use tara::protocol::topology::{self, To, Tuple};
use tara::protocol::{
    Committer, Controller, Executor, GcSource, Outbox, Proposer, Recovered, Replica, RequestSource, Stage,
};
use tara::storage::{Disk, Persist, ReplicaStore};

use super::config::SimConfig;
use super::world::{Check, Event, Node, World};

/// The root of the simulated state directory.
pub(super) const ROOT: &str = "/sim";

/// One replica slot: its state (`None` while down), its gate, and its pending outbox.
pub(super) struct Hosted {
    pub(super) replica: Option<Box<dyn Replica>>,
    persist: Option<Persist>,
    out: Outbox,
    flush_scheduled: bool,
    /// When its next tick is scheduled (ticks scheduled for other times are stale).
    pub(super) tick_at: Option<u64>,
    /// Its durable state is unusable (damaged, or a dead disk): it stays down for good.
    pub(super) broken: bool,
}

impl Hosted {
    pub(super) fn empty() -> Hosted {
        Hosted {
            replica: None,
            persist: None,
            out: Outbox::default(),
            flush_scheduled: false,
            tick_at: None,
            broken: false,
        }
    }
}

/// A fresh replica of `stage` with the run's timeouts; broken if the run's mutation says so.
fn make(config: &SimConfig, stage: Stage, id: u32) -> Box<dyn Replica> {
    let p = &config.params;
    let mutation = config.mutation;
    match stage {
        Stage::Source => {
            let source = RequestSource::new(id, p);
            match mutation {
                Some(m @ Mutation::SourceNeverFlushes) => Box::new(source.mutate(m)),
                _ => Box::new(source),
            }
        }
        Stage::Proposer => Box::new(Proposer::new(id, p).repair_timeout_us(config.repair_us)),
        Stage::Committer => Box::new(Committer::new(id, p)),
        Stage::Executor => {
            let executor =
                Executor::new(id, p, KvStore::default()).emit_executed(true).repair_timeout_us(config.repair_us);
            match mutation {
                Some(
                    m @ (Mutation::SkipDuplicateCheck
                    | Mutation::ExecuteOutOfOrder
                    | Mutation::CheckpointForgetsClients
                    | Mutation::CommitAfterF
                    | Mutation::UnansweredCommandsOpenSessions),
                ) => Box::new(executor.mutate(m)),
                _ => Box::new(executor),
            }
        }
        Stage::Gc => Box::new(GcSource::new(id, p)),
        Stage::Controller => Box::new(Controller::new(id, p)),
    }
}

impl World {
    /// (Re)starts a replica from its durable state only, as a restarted host would. A replica
    /// whose state cannot be used refuses to start and stays down.
    pub(super) fn start_replica(&mut self, node: Node) {
        let Node::At(stage, id) = node else { return };
        let disk: Arc<dyn Disk> = Arc::new(self.disk.clone());
        match ReplicaStore::open(&disk, Path::new(ROOT), stage, id, true) {
            Ok(opened) => {
                let mut replica = make(&self.config, stage, id);
                let forgets =
                    stage == Stage::Committer && self.config.mutation == Some(Mutation::CommitterForgetsRecords);
                let recovered = if forgets { Recovered::Fresh } else { opened.recovered };
                let _ = replica.resume(recovered);
                let slot = self.slot(node);
                (slot.replica, slot.persist, slot.out) =
                    (Some(replica), Some(Persist::manual(opened.store)), Outbox::default());
                slot.flush_scheduled = false;
                self.note(node, "STARTED".into());
                // The host activates a replica as it starts.
                self.tick_at(node, self.now + 1);
            }
            Err(error) => {
                self.outcome.refusals += 1;
                self.slot(node).broken = true;
                self.note(node, format!("REFUSED TO START: {error}"));
            }
        }
    }

    /// Crashes a replica: its state and every write not yet on disk are lost (its counters are
    /// added to the run's figures first).
    pub(super) fn crash_replica(&mut self, node: Node) {
        self.count_final(node);
        let slot = self.slot(node);
        slot.replica = None;
        slot.persist = None;
        slot.out = Outbox::default();
        slot.flush_scheduled = false;
    }

    /// Hands a tuple (or just the time) to a live replica, then lets its gate release what it
    /// may, exactly as the stage host does in one activation.
    pub(super) fn step(&mut self, node: Node, tuple: Option<Tuple>) -> Check {
        let now = self.now;
        let slot = self.slot(node);
        let Some(replica) = slot.replica.as_mut() else { return Ok(()) };
        let delivered = tuple.is_some();
        if let Some(tuple) = tuple {
            let kind = tuple.kind();
            if !replica.on_tuple(tuple, now, &mut slot.out) {
                return Err(("routing", format!("{node:?} cannot handle a {kind:?} tuple")));
            }
        }
        replica.on_tick(now, &mut slot.out);
        self.release(node, delivered)
    }

    /// The simulated disk finished the replica's queued writes.
    pub(super) fn flush(&mut self, node: Node) -> Check {
        let slot = self.slot(node);
        slot.flush_scheduled = false;
        let Some(persist) = slot.persist.as_mut() else { return Ok(()) };
        persist.flush();
        self.release(node, false)
    }

    fn release(&mut self, node: Node, delivered: bool) -> Check {
        let mut sent = Vec::new();
        let slot = self.slot(node);
        let (Some(persist), Some(replica)) = (slot.persist.as_mut(), slot.replica.as_ref()) else { return Ok(()) };
        let result = persist.send(&mut slot.out, &mut |t| sent.push(t));
        let counters = replica.counters();
        let pending = persist.pending() && !slot.flush_scheduled;
        if let Err(error) = result {
            return self.disk_failed(node, error.to_string());
        }
        if pending {
            self.slot(node).flush_scheduled = true;
            let (low, high) = self.config.disk_delay_us;
            let at = self.now + self.rng.random_range(low..=high);
            self.schedule(at, Event::Flush(node));
        }
        if node.stage() == Some(Stage::Executor) {
            self.check_history(node.id(), counters.next, counters.history)?;
        }
        self.next_tick(node, delivered || !sent.is_empty());
        sent.into_iter().try_for_each(|tuple| self.route(node, tuple))
    }

    /// When the stage host ticks a replica next: at the next epoch after a busy step (it
    /// received or sent tuples); otherwise at the replica's deadline (a time past: the next
    /// epoch), or after the idle tick if the run has one. A timer missing from `deadline_us`
    /// then shows as a stuck run.
    fn next_tick(&mut self, node: Node, busy: bool) {
        let (now, epoch) = (self.now, self.config.tick_us);
        let epoch_at = now + epoch + self.rng.random_range(0..epoch / 4 + 1);
        let Some(replica) = self.slot(node).replica.as_ref() else { return };
        let deadline = replica.deadline_us().map(|d| if d <= now { epoch_at } else { d });
        let idle = self.config.idle_tick_us.map(|idle| now + idle);
        let at = if busy {
            Some(deadline.map_or(epoch_at, |d| d.min(epoch_at)))
        } else {
            deadline.into_iter().chain(idle).min()
        };
        if let Some(at) = at {
            self.tick_at(node, at);
        }
    }

    /// Schedules a tick of `node` at `at` unless one is due sooner.
    pub(super) fn tick_at(&mut self, node: Node, at: u64) {
        let now = self.now;
        let slot = self.slot(node);
        if slot.tick_at.is_some_and(|t| t >= now && t <= at) {
            return;
        }
        slot.tick_at = Some(at);
        self.schedule(at, Event::Tick(node));
    }

    /// A write failed: the replica stops participating. A one-time fault is repaired (the
    /// replica restarts from its durable state later); a dead disk stays dead.
    fn disk_failed(&mut self, node: Node, error: String) -> Check {
        self.outcome.disk_failures += 1;
        self.note(node, format!("DISK FAILED: {error}"));
        self.crash_replica(node);
        if self.disk_dead {
            self.slot(node).broken = true;
        } else {
            let back = self.now + self.rng.random_range(1..=self.config.downtime_us);
            self.schedule(back, Event::Restart(node));
        }
        Ok(())
    }

    /// Adds what a replica counted in its incarnation to the run's figures: the no-ops a
    /// proposer proposed to fill its partition's slots for the merge, the state transfers an
    /// executor restored.
    pub(super) fn count_final(&mut self, node: Node) {
        let Some(counters) = self.slot(node).replica.as_ref().map(|r| r.counters()) else { return };
        match node.stage() {
            Some(Stage::Proposer) => self.outcome.filled += counters.filled,
            Some(Stage::Executor) => {
                self.outcome.transfers += counters.transfers;
                self.outcome.views = self.outcome.views.max(counters.view);
            }
            _ => {}
        }
    }

    /// Sends a tuple to the receivers the topology names: a multicast to the receiving stages'
    /// replicas of the tuple's partition (all of a shared stage's), a named or led tuple to the
    /// one replica the topology derives.
    fn route(&mut self, from: Node, tuple: Tuple) -> Check {
        self.before_send(&tuple)?;
        let route = topology::route(tuple.kind());
        if let (true, Tuple::Reply(reply)) = (route.to_clients, &tuple)
            && let Some(client) = self.clients.iter().position(|c| c.id == reply.client)
        {
            self.send(from, Node::Client(client as u32), tuple.clone());
        }
        match route.to_whom {
            To::Every => {
                let partition = tuple.partition(&self.config.params);
                for stage in route.to {
                    for id in topology::receivers(*stage, partition, &self.config.params) {
                        self.send(from, Node::At(*stage, id), tuple.clone());
                    }
                }
            }
            To::Named | To::Leader => {
                let count = route.to[0].replicas(&self.config.params) as u32;
                match topology::destination(route, &tuple, &self.config.params).filter(|id| *id < count) {
                    Some(id) => self.send(from, Node::At(route.to[0], id), tuple),
                    None => return Err(("routing", format!("{from:?} addressed {tuple:?} to nobody"))),
                }
            }
            To::Out => return self.observe(tuple),
        }
        Ok(())
    }

    fn observe(&mut self, tuple: Tuple) -> Check {
        match tuple {
            Tuple::Executed(executed) => self.check_executed(*executed),
            other => Err(("routing", format!("{other:?} left the dataflow"))),
        }
    }

    /// Before a proposal leaves, check one proposer per view and one proposal per slot; count
    /// nacks (fill requests apart) and the views commits are made in.
    fn before_send(&mut self, tuple: &Tuple) -> Check {
        match tuple {
            Tuple::Propose(propose) => self.check_proposal(propose),
            Tuple::Commit(commit) => {
                self.note_commit_view(commit);
                Ok(())
            }
            Tuple::Nack(nack) => {
                match nack.fill {
                    true => self.outcome.fill_asks += 1,
                    false => self.outcome.nacks += 1,
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
