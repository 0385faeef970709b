//! Duplicate detection for executors (Section III-C): per-client executed timestamps and results.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::app::{FastMap, digest_bytes, digest_extend};

/// What an executor should do with a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Not executed before: execute it and [`ClientEntry::record`] the result.
    Execute,
    /// Executed before: answer with this cached result.
    Cached(&'a [u8]),
    /// Answered before and forgotten (the client acknowledged it), or older than the client's
    /// window: neither executed now nor known.
    Expired,
}

/// One client's duplicate-detection state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Session {
    /// `t_exec` of the paper: the highest executed timestamp.
    highest: u64,
    /// The client has every answer below this timestamp.
    answered_below: u64,
    /// Results of executed commands the client may still ask for again, by timestamp (sorted;
    /// usually one or a few entries, most inserts at the back).
    results: VecDeque<(u64, ByteBuf)>,
}

impl Session {
    fn find(&self, timestamp: u64) -> Result<usize, usize> {
        self.results.binary_search_by_key(&timestamp, |(t, _)| *t)
    }

    /// Forgets every result the client has or can no longer ask for.
    fn prune(&mut self, window: u64) {
        let oldest_kept = self.answered_below.max((self.highest + 1).saturating_sub(window));
        while self.results.front().is_some_and(|(t, _)| *t < oldest_kept) {
            self.results.pop_front();
        }
    }
}

/// The paper's vector `T_exec` and result cache, generalised to clients with many commands
/// outstanding.
///
/// The paper's clients have one command outstanding, so the highest executed timestamp and the
/// latest result suffice. A client that pipelines may see its commands ordered out of timestamp
/// order, so the table remembers, per client, the result of every executed command that the
/// client has not acknowledged, within its last `window` timestamps: a command in that range
/// was executed exactly when its result is remembered. Each command carries
/// `answered_below`, the client's acknowledgement of every answer below it; results below it
/// are forgotten. A client with one outstanding command thus costs one remembered result.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientTable {
    window: u64,
    sessions: FastMap<u64, Session>,
}

/// One client's state, found once per command.
pub struct ClientEntry<'a> {
    session: &'a mut Session,
    window: u64,
}

impl ClientEntry<'_> {
    /// Records the client's acknowledgement that it has every answer below `answered_below`.
    pub fn acknowledge(&mut self, answered_below: u64) {
        if answered_below > self.session.answered_below {
            self.session.answered_below = answered_below;
            self.session.prune(self.window);
        }
    }

    /// Decides whether the command with `timestamp` must be executed.
    pub fn check(&self, timestamp: u64) -> Verdict<'_> {
        if let Ok(index) = self.session.find(timestamp) {
            return Verdict::Cached(&self.session.results[index].1);
        }
        if timestamp < self.session.answered_below || timestamp + self.window <= self.session.highest {
            return Verdict::Expired;
        }
        Verdict::Execute
    }

    /// Remembers the result of an executed command and forgets results that left the window.
    pub fn record(&mut self, timestamp: u64, result: Vec<u8>) {
        let session = &mut *self.session;
        match session.find(timestamp) {
            Ok(index) => session.results[index].1 = ByteBuf::from(result),
            Err(index) => session.results.insert(index, (timestamp, ByteBuf::from(result))),
        }
        if timestamp > session.highest {
            session.highest = timestamp;
            session.prune(self.window);
        }
    }
}

impl ClientTable {
    /// An empty table that remembers at most `window` results per client.
    pub fn new(window: u64) -> ClientTable {
        ClientTable { window, sessions: FastMap::default() }
    }

    /// The state of `client` (created empty for a new client).
    pub fn entry(&mut self, client: u64) -> ClientEntry<'_> {
        ClientEntry { session: self.sessions.entry(client).or_default(), window: self.window }
    }

    /// Clients known to the table.
    pub fn clients(&self) -> usize {
        self.sessions.len()
    }

    /// Results held in total (state, for metrics and bounds).
    pub fn results_held(&self) -> usize {
        self.sessions.values().map(|s| s.results.len()).sum()
    }

    /// A digest of the table that does not depend on hash-map order.
    pub fn digest(&self) -> u64 {
        let mut clients: Vec<(&u64, &Session)> = self.sessions.iter().collect();
        clients.sort_unstable_by_key(|(c, _)| **c);
        let mut hash = digest_bytes(b"clients");
        for (client, session) in clients {
            for number in [*client, session.highest, session.answered_below] {
                hash = digest_extend(hash, &number.to_le_bytes());
            }
            for (timestamp, result) in &session.results {
                hash = digest_extend(digest_extend(hash, &timestamp.to_le_bytes()), result);
            }
        }
        hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(t: &mut ClientTable, client: u64, timestamp: u64) -> Option<Vec<u8>> {
        match t.entry(client).check(timestamp) {
            Verdict::Execute => None,
            Verdict::Cached(r) => Some(r.to_vec()),
            Verdict::Expired => Some(b"expired".to_vec()),
        }
    }

    /// Section III-C: t_cmd <= t_exec returns the cached result instead of executing again.
    #[test]
    fn a_duplicate_gets_the_cached_result() {
        let mut t = ClientTable::new(4);
        assert_eq!(check(&mut t, 7, 1), None);
        t.entry(7).record(1, b"one".to_vec());
        assert_eq!(check(&mut t, 7, 1), Some(b"one".to_vec()));
        assert_eq!(check(&mut t, 7, 2), None);
        assert_eq!(check(&mut t, 8, 1), None, "clients are independent");
    }

    /// Pipelined commands may execute out of timestamp order; each executes exactly once.
    #[test]
    fn out_of_order_commands_inside_the_window_execute_once() {
        let mut t = ClientTable::new(4);
        t.entry(7).record(3, b"three".to_vec());
        assert_eq!(check(&mut t, 7, 2), None, "2 was not executed yet");
        t.entry(7).record(2, b"two".to_vec());
        assert_eq!(check(&mut t, 7, 2), Some(b"two".to_vec()));
        assert_eq!(check(&mut t, 7, 3), Some(b"three".to_vec()));
    }

    #[test]
    fn results_leave_the_window() {
        let mut t = ClientTable::new(2);
        for ts in 1..=5 {
            t.entry(7).record(ts, vec![ts as u8]);
        }
        assert_eq!(t.results_held(), 2);
        assert_eq!(check(&mut t, 7, 3), Some(b"expired".to_vec()));
        assert_eq!(check(&mut t, 7, 4), Some(vec![4]));
    }

    /// Acknowledged results are forgotten, and their commands are never executed again.
    #[test]
    fn acknowledged_results_are_forgotten() {
        let mut t = ClientTable::new(64);
        for ts in 1..=3 {
            t.entry(7).record(ts, vec![ts as u8]);
        }
        t.entry(7).acknowledge(3);
        assert_eq!(t.results_held(), 1);
        assert_eq!(check(&mut t, 7, 1), Some(b"expired".to_vec()), "answered, forgotten, not executed again");
        assert_eq!(check(&mut t, 7, 3), Some(vec![3]));
        t.entry(7).acknowledge(2);
        assert_eq!(t.results_held(), 1, "acknowledgements never move back");
    }

    #[test]
    fn digests_ignore_insertion_order() {
        let (mut a, mut b) = (ClientTable::new(4), ClientTable::new(4));
        for c in 0..50 {
            a.entry(c).record(1, vec![c as u8]);
            b.entry(49 - c).record(1, vec![(49 - c) as u8]);
        }
        assert_eq!(a.digest(), b.digest());
        b.entry(3).record(2, vec![]);
        assert_ne!(a.digest(), b.digest());
    }
}
