//! Duplicate detection for executors (Section III-C): per-client executed timestamps and results.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::app::{fnv1a, fnv1a_extend};

/// What an executor should do with a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Not executed before: execute it and [`ClientTable::record`] the result.
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
    /// Results of executed commands the client may still ask for again.
    results: BTreeMap<u64, Vec<u8>>,
}

impl Session {
    /// Forgets every result the client has or can no longer ask for.
    fn prune(&mut self, window: u64) {
        let oldest_kept = self.answered_below.max((self.highest + 1).saturating_sub(window));
        while let Some(entry) = self.results.first_entry() {
            if *entry.key() >= oldest_kept {
                break;
            }
            entry.remove();
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
    sessions: HashMap<u64, Session>,
}

impl ClientTable {
    /// An empty table that remembers at most `window` results per client.
    pub fn new(window: u64) -> ClientTable {
        ClientTable { window, sessions: HashMap::new() }
    }

    /// Decides whether `(client, timestamp)` must be executed.
    pub fn check(&self, client: u64, timestamp: u64) -> Verdict<'_> {
        let Some(session) = self.sessions.get(&client) else { return Verdict::Execute };
        if let Some(result) = session.results.get(&timestamp) {
            return Verdict::Cached(result);
        }
        if timestamp < session.answered_below || timestamp + self.window <= session.highest {
            return Verdict::Expired;
        }
        Verdict::Execute
    }

    /// Records the client's acknowledgement that it has every answer below `answered_below`.
    pub fn acknowledge(&mut self, client: u64, answered_below: u64) {
        let Some(session) = self.sessions.get_mut(&client) else { return };
        if answered_below > session.answered_below {
            session.answered_below = answered_below;
            session.prune(self.window);
        }
    }

    /// Remembers the result of an executed command and forgets results that left the window.
    pub fn record(&mut self, client: u64, timestamp: u64, result: Vec<u8>) {
        let session = self.sessions.entry(client).or_default();
        session.results.insert(timestamp, result);
        if timestamp > session.highest {
            session.highest = timestamp;
            session.prune(self.window);
        }
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
        let mut hash = fnv1a(b"clients");
        for (client, session) in clients {
            for number in [*client, session.highest, session.answered_below] {
                hash = fnv1a_extend(hash, &number.to_le_bytes());
            }
            for (timestamp, result) in &session.results {
                hash = fnv1a_extend(fnv1a_extend(hash, &timestamp.to_le_bytes()), result);
            }
        }
        hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Section III-C: t_cmd <= t_exec returns the cached result instead of executing again.
    #[test]
    fn a_duplicate_gets_the_cached_result() {
        let mut t = ClientTable::new(4);
        assert_eq!(t.check(7, 1), Verdict::Execute);
        t.record(7, 1, b"one".to_vec());
        assert_eq!(t.check(7, 1), Verdict::Cached(b"one"));
        assert_eq!(t.check(7, 2), Verdict::Execute);
        assert_eq!(t.check(8, 1), Verdict::Execute, "clients are independent");
    }

    /// Pipelined commands may execute out of timestamp order; each executes exactly once.
    #[test]
    fn out_of_order_commands_inside_the_window_execute_once() {
        let mut t = ClientTable::new(4);
        t.record(7, 3, b"three".to_vec());
        assert_eq!(t.check(7, 2), Verdict::Execute, "2 was not executed yet");
        t.record(7, 2, b"two".to_vec());
        assert_eq!(t.check(7, 2), Verdict::Cached(b"two"));
        assert_eq!(t.check(7, 3), Verdict::Cached(b"three"));
    }

    #[test]
    fn results_leave_the_window() {
        let mut t = ClientTable::new(2);
        for ts in 1..=5 {
            t.record(7, ts, vec![ts as u8]);
        }
        assert_eq!(t.results_held(), 2);
        assert_eq!(t.check(7, 3), Verdict::Expired);
        assert_eq!(t.check(7, 4), Verdict::Cached(&[4]));
    }

    /// Acknowledged results are forgotten, and their commands are never executed again.
    #[test]
    fn acknowledged_results_are_forgotten() {
        let mut t = ClientTable::new(64);
        for ts in 1..=3 {
            t.record(7, ts, vec![ts as u8]);
        }
        t.acknowledge(7, 3);
        assert_eq!(t.results_held(), 1);
        assert_eq!(t.check(7, 1), Verdict::Expired, "answered, forgotten, not executed again");
        assert_eq!(t.check(7, 3), Verdict::Cached(&[3]));
        t.acknowledge(7, 2);
        assert_eq!(t.results_held(), 1, "acknowledgements never move back");
    }
}
