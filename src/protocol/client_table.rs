//! Duplicate detection for executors (Section III-C): per-client executed timestamps and results.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// What an executor should do with a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Not executed before: execute it and [`ClientTable::record`] the result.
    Execute,
    /// Executed before: answer with this cached result.
    Cached(&'a [u8]),
    /// Older than the client's window: neither executed now nor known.
    Expired,
}

/// One client's duplicate-detection state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Session {
    /// `t_exec` of the paper: the highest executed timestamp.
    highest: u64,
    /// Results of executed commands with timestamps in `(highest - window, highest]`.
    results: BTreeMap<u64, Vec<u8>>,
}

/// The paper's vector `T_exec` and result cache, generalised to clients with many commands
/// outstanding.
///
/// The paper's clients have one command outstanding, so the highest executed timestamp and the
/// latest result suffice. A client that pipelines may see its commands ordered out of timestamp
/// order, so the table remembers, per client, the results of every executed command within the
/// last `window` timestamps: a command in that range was executed exactly when its result is
/// remembered. Clients number their commands 1, 2, 3, ... and keep at most `window` outstanding,
/// so a retransmission always falls inside the range.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientTable {
    window: u64,
    sessions: HashMap<u64, Session>,
}

impl ClientTable {
    /// An empty table that remembers `window` results per client.
    pub fn new(window: u64) -> ClientTable {
        ClientTable { window, sessions: HashMap::new() }
    }

    /// Decides whether `(client, timestamp)` must be executed.
    pub fn check(&self, client: u64, timestamp: u64) -> Verdict<'_> {
        let Some(session) = self.sessions.get(&client) else { return Verdict::Execute };
        if timestamp > session.highest {
            return Verdict::Execute;
        }
        if timestamp + self.window <= session.highest {
            return Verdict::Expired;
        }
        match session.results.get(&timestamp) {
            Some(result) => Verdict::Cached(result),
            None => Verdict::Execute,
        }
    }

    /// Remembers the result of an executed command and forgets results that left the window.
    pub fn record(&mut self, client: u64, timestamp: u64, result: Vec<u8>) {
        let session = self.sessions.entry(client).or_default();
        session.results.insert(timestamp, result);
        if timestamp > session.highest {
            session.highest = timestamp;
            let oldest_kept = (timestamp + 1).saturating_sub(self.window);
            while let Some(entry) = session.results.first_entry() {
                if *entry.key() >= oldest_kept {
                    break;
                }
                entry.remove();
            }
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

    /// A deterministic encoding (clients in order), for checkpoints and digests.
    pub fn ordered(&self) -> BTreeMap<u64, (u64, &BTreeMap<u64, Vec<u8>>)> {
        self.sessions.iter().map(|(c, s)| (*c, (s.highest, &s.results))).collect()
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
}
