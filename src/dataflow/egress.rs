//! Egress: replies out of the dataflow to the clients waiting in other threads.
//!
//! Every executor replica answers every command, but a client needs one answer: the reply sink
//! hands on the first reply of a command that reaches it in an activation and drops the copies
//! that arrive with it. The replies of one activation that go to one mailbox travel together,
//! as one [`Replies`] batch: a client thread then wakes once per batch, not once per reply.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use crossbeam_channel::Sender;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::protocol::Reply;

/// Replies delivered to a mailbox together, in the order they reached the reply sink.
pub type Replies = Vec<Reply>;

/// Called after replies were put into a mailbox (once per egress activation), for receivers that
/// sleep in something other than the channel, like a network event loop.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// Clients whose mailboxes the reply sink remembers; past this many it forgets them all and
/// looks each up again (clients over TCP come and go, and must not grow the cache forever).
pub const MAILBOX_CACHE_MAX: usize = 1 << 16;

/// A fast, DoS-resistant hasher for the reply sink's maps.
type Fast = foldhash::fast::RandomState;

/// A client's mailbox: where its replies go, and who to wake.
#[derive(Clone)]
struct Mailbox {
    sender: Sender<Replies>,
    notify: Option<Notify>,
}

/// Where each client's replies go: a channel per client, or one shared by a group of clients.
#[derive(Default)]
pub struct Mailboxes {
    by_client: RwLock<HashMap<u64, Mailbox>>,
}

impl Mailboxes {
    /// An empty registry.
    pub fn new() -> Arc<Mailboxes> {
        Arc::new(Mailboxes::default())
    }

    /// Delivers the replies of `client` to `mailbox` from now on.
    pub fn register(&self, client: u64, mailbox: Sender<Replies>) {
        self.insert(client, Mailbox { sender: mailbox, notify: None });
    }

    /// Like [`Mailboxes::register`], and calls `notify` after replies were delivered.
    pub fn register_with_notify(&self, client: u64, mailbox: Sender<Replies>, notify: Notify) {
        self.insert(client, Mailbox { sender: mailbox, notify: Some(notify) });
    }

    fn insert(&self, client: u64, mailbox: Mailbox) {
        if let Ok(mut map) = self.by_client.write() {
            map.insert(client, mailbox);
        }
    }

    /// Stops delivering the replies of `client`.
    pub fn unregister(&self, client: u64) {
        if let Ok(mut map) = self.by_client.write() {
            map.remove(&client);
        }
    }

    fn lookup(&self, client: u64) -> Option<Mailbox> {
        self.by_client.read().ok()?.get(&client).cloned()
    }
}

/// What the reply sink keeps between activations: where each client's replies go (an index
/// into `outgoing`, which holds one batch per distinct channel), and the commands answered in
/// this activation.
#[derive(Default)]
struct Sink {
    routes: HashMap<u64, usize, Fast>,
    outgoing: Vec<(Mailbox, Replies)>,
    answered: HashSet<(u64, u64), Fast>,
}

impl Sink {
    /// Queues `reply` for its client unless a copy was queued in this activation. A client's
    /// mailbox is looked up on first use and shares the batch of its channel.
    fn take(&mut self, mailboxes: &Mailboxes, reply: Reply) {
        if !self.answered.insert((reply.client, reply.timestamp)) {
            return;
        }
        let index = match self.routes.get(&reply.client) {
            Some(index) => *index,
            None => {
                let Some(mailbox) = mailboxes.lookup(reply.client) else { return };
                let shared = self.outgoing.iter().position(|(m, _)| m.sender.same_channel(&mailbox.sender));
                let index = shared.unwrap_or(self.outgoing.len());
                if index == self.outgoing.len() {
                    self.outgoing.push((mailbox, Vec::new()));
                }
                self.routes.insert(reply.client, index);
                index
            }
        };
        self.outgoing[index].1.push(reply);
    }

    /// Sends every batch and wakes its receiver. A closed channel, or more than
    /// [`MAILBOX_CACHE_MAX`] clients, makes it forget every route (they are looked up again).
    fn flush(&mut self) {
        self.answered.clear();
        let mut closed = false;
        for (mailbox, batch) in self.outgoing.iter_mut().filter(|(_, batch)| !batch.is_empty()) {
            closed |= mailbox.sender.send(std::mem::take(batch)).is_err();
            if let Some(notify) = &mailbox.notify {
                notify();
            }
        }
        if closed || self.routes.len() > MAILBOX_CACHE_MAX {
            (self.routes, self.outgoing) = (HashMap::default(), Vec::new());
        }
    }
}

/// The reply sink: hands the first reply of every command that reaches this worker to its
/// client's mailbox, in batches. Replies of unknown or departed clients are dropped.
pub fn egress(replies: Stream<'_, u64, Vec<Reply>>, mailboxes: &Arc<Mailboxes>) {
    let mailboxes = mailboxes.clone();
    let mut sink = Sink::default();
    replies.sink(Pipeline, "Egress", move |(input, _frontier)| {
        input.for_each(|_, data| data.drain(..).for_each(|reply| sink.take(&mailboxes, reply)));
        sink.flush();
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Outcome;

    fn reply(executor: u32, client: u64, timestamp: u64) -> Reply {
        Reply {
            executor,
            source: 0,
            request: 1,
            index: 0,
            client,
            timestamp,
            outcome: Outcome::Executed,
            result: vec![],
        }
    }

    /// The three executors' replies to a command become one, and the replies of one
    /// activation for clients of one channel go out as one batch.
    #[test]
    fn one_reply_per_command_and_one_batch_per_channel() {
        let mailboxes = Mailboxes::new();
        let (shared, pool) = crossbeam_channel::unbounded();
        let (own, alone) = crossbeam_channel::unbounded();
        mailboxes.register(1, shared.clone());
        mailboxes.register(2, shared);
        mailboxes.register(3, own);
        let mut sink = Sink::default();
        for executor in 0..3 {
            for client in [1, 2, 3, 4] {
                sink.take(&mailboxes, reply(executor, client, 10));
            }
        }
        sink.flush();
        let batch = pool.try_recv().expect("one batch for the shared channel");
        let got: Vec<(u64, u32)> = batch.iter().map(|r| (r.client, r.executor)).collect();
        assert_eq!(got, vec![(1, 0), (2, 0)], "the first reply of each command, once");
        assert!(pool.try_recv().is_err(), "a single batch");
        assert_eq!(alone.try_recv().map(|b| b.len()), Ok(1));
        // A later activation passes a reply again: a retransmitted command's answer is delivered.
        sink.take(&mailboxes, reply(2, 1, 10));
        sink.flush();
        assert_eq!(pool.try_recv().map(|b| b.len()), Ok(1));
    }

    /// A mailbox whose receiver is gone is forgotten; its client's next replies are looked up
    /// again, so a client that registered elsewhere gets them there.
    #[test]
    fn a_closed_mailbox_is_looked_up_again() {
        let mailboxes = Mailboxes::new();
        let (old, gone) = crossbeam_channel::unbounded();
        mailboxes.register(1, old);
        drop(gone);
        let mut sink = Sink::default();
        sink.take(&mailboxes, reply(0, 1, 1));
        sink.flush();
        let (new, receiver) = crossbeam_channel::unbounded();
        mailboxes.register(1, new);
        sink.take(&mailboxes, reply(0, 1, 2));
        sink.flush();
        assert_eq!(receiver.try_recv().map(|b| b[0].timestamp), Ok(2));
    }
}
