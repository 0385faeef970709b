//! Delivering tuples and ticks to the replicas of the simulated deployment, and routing what
//! they emit, the way the timely operators do.

use tara::protocol::{CommitterOutbox, ExecutorOutbox, Propose, SourceOutbox, Stable, View};

use super::world::{Check, Msg, Node, World};

impl World {
    /// Hands a tuple to a live replica (a crashed one has already dropped it).
    pub(super) fn at_replica(&mut self, node: Node, msg: Msg) -> Check {
        match node {
            Node::Source(i) => self.at_source(i, Some(msg)),
            Node::Proposer(i) => self.at_proposer(i, Some(msg)),
            Node::Committer(i) => self.at_committer(i, Some(msg)),
            Node::Executor(i) => self.at_executor(i, Some(msg)),
            Node::Gc(i) => self.at_gc(i, Some(msg)),
            Node::Controller(i) => self.at_controller(i, Some(msg)),
            Node::Client(_) => Err(("routing", format!("{node:?} got {msg:?}"))),
        }
    }

    /// Time passed at a replica.
    pub(super) fn tick(&mut self, node: Node) -> Check {
        match node {
            Node::Source(i) => self.at_source(i, None),
            Node::Proposer(i) => self.at_proposer(i, None),
            Node::Committer(i) => self.at_committer(i, None),
            Node::Executor(i) => self.at_executor(i, None),
            Node::Gc(i) => self.at_gc(i, None),
            Node::Controller(i) => self.at_controller(i, None),
            Node::Client(_) => Ok(()),
        }
    }

    fn routing(node: Node, msg: &Msg) -> Check {
        Err(("routing", format!("{node:?} cannot handle {msg:?}")))
    }

    fn at_source(&mut self, i: u32, msg: Option<Msg>) -> Check {
        let now = self.now;
        let mut out = SourceOutbox::default();
        let Some(s) = self.sources[i as usize].as_mut() else { return Ok(()) };
        match msg {
            Some(Msg::Submit(command)) => s.on_command(command, now, &mut out),
            Some(Msg::Reply(reply)) => s.on_reply(&reply),
            Some(Msg::View(view)) => s.on_view(view, now, &mut out),
            Some(other) => return Self::routing(Node::Source(i), &other),
            None => {}
        }
        s.on_tick(now, &mut out);
        for (proposer, request) in out.requests {
            self.send(Node::Source(i), Node::Proposer(proposer), Msg::Request(request));
        }
        for target in out.targets {
            self.multicast(Node::Source(i), self.controller_nodes(), Msg::Target(target));
        }
        Ok(())
    }

    fn at_proposer(&mut self, i: u32, msg: Option<Msg>) -> Check {
        let now = self.now;
        let mut out: Vec<Propose> = Vec::new();
        let Some(p) = self.proposers[i as usize].as_mut() else { return Ok(()) };
        match msg {
            Some(Msg::Request(r)) => p.on_request(r, &mut out),
            Some(Msg::Stable(s)) => p.on_stable(s, &mut out),
            Some(Msg::Nack(n)) => p.on_nack(n, &mut out),
            Some(Msg::View(v)) => p.on_view(v),
            Some(Msg::Record(r)) => p.on_record(r, &mut out),
            Some(other) => return Self::routing(Node::Proposer(i), &other),
            None => p.on_tick(now, &mut out),
        }
        // The led view is durable before any proposal of it leaves.
        self.led_disks[i as usize] = p.led();
        for propose in out {
            self.check_proposal(&propose)?;
            let committers = (0..self.config.params.committers() as u32).map(Node::Committer);
            self.multicast(Node::Proposer(i), committers, Msg::Propose(propose));
        }
        Ok(())
    }

    fn at_committer(&mut self, i: u32, msg: Option<Msg>) -> Check {
        let now = self.now;
        let mut out = CommitterOutbox::default();
        let Some(k) = self.committers[i as usize].as_mut() else { return Ok(()) };
        match msg {
            Some(Msg::Propose(p)) => k.on_propose(p, &mut out),
            Some(Msg::Stable(s)) => k.on_stable(s, &mut out),
            Some(Msg::View(v)) => k.on_view(v, now, &mut out),
            Some(other) => return Self::routing(Node::Committer(i), &other),
            None => k.on_tick(now, &mut out),
        }
        // The log is durable before anything leaves.
        self.log_disks[i as usize].append(&mut out.log);
        let executors: Vec<Node> = (0..self.config.params.executors() as u32).map(Node::Executor).collect();
        for commit in out.commits {
            self.multicast(Node::Committer(i), executors.iter().copied(), Msg::Commit(commit));
        }
        let proposers = self.config.params.proposers() as u64;
        for record in out.records {
            let to = Node::Proposer((record.view % proposers) as u32);
            self.send(Node::Committer(i), to, Msg::Record(record));
        }
        Ok(())
    }

    pub(super) fn at_executor(&mut self, i: u32, msg: Option<Msg>) -> Check {
        let mut out = ExecutorOutbox::default();
        let now = self.now;
        let Some(e) = self.executors[i as usize].as_mut() else { return Ok(()) };
        match msg {
            Some(Msg::Commit(c)) => e.on_commit(c, &mut out),
            Some(Msg::Stable(s)) => e.on_stable(s),
            Some(Msg::Fetch(f)) => e.on_fetch(f, &mut out),
            Some(Msg::Transfer(t)) => e.on_transfer(t, &mut out),
            Some(Msg::View(v)) => e.on_view(v),
            Some(other) => return Self::routing(Node::Executor(i), &other),
            None => {}
        }
        e.on_tick(now, &mut out);
        // Durable storage: the checkpoint is on the simulated disk before it is announced.
        for store in std::mem::take(&mut out.stores) {
            self.checkpoint_disks[i as usize] = Some((store.sequence, store.state));
            e.on_stored(store.sequence, &mut out);
        }
        let (next, history) = (e.next(), e.history());
        self.check_history(i, next, history)?;
        for executed in out.executed.drain(..) {
            self.check_executed(executed)?;
        }
        self.route_executor(i, out);
        Ok(())
    }

    fn route_executor(&mut self, i: u32, mut out: ExecutorOutbox) {
        let from = Node::Executor(i);
        for reply in out.replies.drain(..) {
            // The reply sink next to the source hands it to the client, and the source learns
            // the request was answered.
            self.send(from, Node::Source(reply.source), Msg::Reply(reply.clone()));
            if let Some(client) = self.clients.iter().position(|c| c.id == reply.client) {
                self.send(from, Node::Client(client as u32), Msg::Reply(reply));
            }
        }
        let gcs = self.config.params.gc_sources() as u32;
        for checkpoint in out.checkpoints.drain(..) {
            self.multicast(from, (0..gcs).map(Node::Gc), Msg::Checkpoint(checkpoint));
        }
        for fetch in out.fetches.drain(..) {
            self.send(from, Node::Executor(fetch.to), Msg::Fetch(fetch));
        }
        for transfer in out.transfers.drain(..) {
            self.send(from, Node::Executor(transfer.to), Msg::Transfer(transfer));
        }
        for nack in out.nacks.drain(..) {
            self.outcome.nacks += 1;
            self.send(from, Node::Proposer(nack.to), Msg::Nack(nack));
        }
        for actual in out.actuals.drain(..) {
            self.multicast(from, self.controller_nodes(), Msg::Actual(actual));
        }
    }

    fn at_gc(&mut self, i: u32, msg: Option<Msg>) -> Check {
        let now = self.now;
        let mut out: Vec<Stable> = Vec::new();
        let Some(g) = self.gcs[i as usize].as_mut() else { return Ok(()) };
        match msg {
            Some(Msg::Checkpoint(c)) => g.on_checkpoint(c, now, &mut out),
            Some(other) => return Self::routing(Node::Gc(i), &other),
            None => g.on_tick(now, &mut out),
        }
        let p = self.config.params.clone();
        for stable in out {
            let to = (0..p.proposers() as u32)
                .map(Node::Proposer)
                .chain((0..p.committers() as u32).map(Node::Committer))
                .chain((0..p.executors() as u32).map(Node::Executor));
            self.multicast(Node::Gc(i), to, Msg::Stable(stable));
        }
        Ok(())
    }

    fn at_controller(&mut self, i: u32, msg: Option<Msg>) -> Check {
        let now = self.now;
        let mut out: Vec<View> = Vec::new();
        let Some(x) = self.controllers[i as usize].as_mut() else { return Ok(()) };
        match msg {
            Some(Msg::Target(t)) => x.on_target(t, now),
            Some(Msg::Actual(a)) => x.on_actual(a, now),
            Some(Msg::View(v)) => x.on_view(v, now),
            Some(other) => return Self::routing(Node::Controller(i), &other),
            None => x.on_tick(now, &mut out),
        }
        for view in out {
            let everyone: Vec<Node> = self.nodes().into_iter().filter(|n| !matches!(n, Node::Gc(_))).collect();
            self.multicast(Node::Controller(i), everyone.into_iter(), Msg::View(view));
        }
        Ok(())
    }

    fn controller_nodes(&self) -> impl Iterator<Item = Node> + use<> {
        (0..self.config.params.controllers() as u32).map(Node::Controller)
    }
}
