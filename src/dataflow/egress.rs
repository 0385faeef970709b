//! Egress: replies out of the dataflow to the clients waiting in other threads.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crossbeam_channel::Sender;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::protocol::Reply;

/// Called after replies were put into a mailbox (once per egress activation), for receivers that
/// sleep in something other than the channel, like a network event loop.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// A client's mailbox: where its replies go, and who to wake.
#[derive(Clone)]
struct Mailbox {
    sender: Sender<Reply>,
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
    pub fn register(&self, client: u64, mailbox: Sender<Reply>) {
        if let Ok(mut map) = self.by_client.write() {
            map.insert(client, Mailbox { sender: mailbox, notify: None });
        }
    }

    /// Like [`Mailboxes::register`], and calls `notify` after replies were delivered.
    pub fn register_with_notify(&self, client: u64, mailbox: Sender<Reply>, notify: Notify) {
        if let Ok(mut map) = self.by_client.write() {
            map.insert(client, Mailbox { sender: mailbox, notify: Some(notify) });
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

/// The reply sink: hands every reply that reaches this worker to its client's mailbox.
/// Replies of unknown or departed clients are dropped.
pub fn egress(replies: Stream<'_, u64, Vec<Reply>>, mailboxes: &Arc<Mailboxes>) {
    let mailboxes = mailboxes.clone();
    let mut cache: HashMap<u64, Mailbox> = HashMap::new();
    let mut woken: Vec<Notify> = Vec::new();
    replies.sink(Pipeline, "Egress", move |(input, _frontier)| {
        input.for_each(|_, data| {
            for reply in data.drain(..) {
                let client = reply.client;
                let mailbox = match cache.entry(client) {
                    std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::hash_map::Entry::Vacant(entry) => {
                        let Some(mailbox) = mailboxes.lookup(client) else { continue };
                        entry.insert(mailbox)
                    }
                };
                if mailbox.sender.send(reply).is_err() {
                    cache.remove(&client);
                    continue;
                }
                if let Some(notify) = &mailbox.notify
                    && !woken.iter().any(|n| Arc::ptr_eq(n, notify))
                {
                    woken.push(notify.clone());
                }
            }
        });
        for notify in woken.drain(..) {
            notify();
        }
    });
}
