//! Duplicate detection for executors (Section III-C): per-client executed timestamps and
//! results, kept in client sessions that expire at the same point of the log at every replica.
//!
//! # Sessions
//!
//! A client's entry is its session. Only a client's first command opens one: timestamp
//! [`FIRST_TIMESTAMP`] (1), claiming no answers (`answered_below` at most 1). Any other command
//! of a client the table does not hold gets [`Verdict::SessionExpired`] and is not executed:
//! its session ended (or never opened), and executing it could execute a command a second time.
//! Every command, keep-alives included, marks its session active at the execution slot that
//! ordered it. Before executing slot `s`, an executor ends every session last active at or
//! below `s - session_timeout`; when a new session would exceed `max_sessions`, the least
//! recently active one ends first.
//!
//! A client therefore opens its session with a keep-alive at timestamp 1
//! ([`crate::protocol::Command::open`]) and sends its other commands (timestamps 2, 3, ...) once
//! that one is answered. The opener is the one command that can execute again after its
//! session ended (it opens a new one), and a keep-alive executing twice changes nothing. The
//! library's clients do this; a client that builds commands by hand and opens with a command
//! that is not a keep-alive may see that command execute twice, if it stays unanswered for a
//! whole session timeout and is then retransmitted.
//!
//! Safety: the slots are the consensus log (Section III-C), so every replica executes the same
//! commands at the same slots from the same state; expiry is a function of that state and of
//! the slot alone (ties broken by client id), so every replica ends the same sessions at the
//! same point of the log, and a checkpoint taken before slot `s` (Section III-D) holds exactly
//! the sessions that a replica executing everything holds there. Within a live session the
//! table is unchanged, so exactly-once holds as before. After expiry, no command of the ended
//! session but the opener executes again, whatever the client claims: every later command is
//! refused, answered or not. What remains is the opener itself: retransmitted after its
//! session ended, it opens a new session and executes again, which is harmless for a keep-alive
//! and a second execution for a hand-built opener that is not one.

use std::collections::VecDeque;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
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
    /// The command claims answers from a session that has ended: not executed.
    SessionExpired,
}

/// The first timestamp of a session: only a command with this timestamp that claims no answers
/// (`answered_below` at most this) opens a session ([`may_open`]).
pub const FIRST_TIMESTAMP: u64 = 1;

/// True if a command with `timestamp` and `answered_below` opens a session for a client the
/// table does not hold: only the client's first command does.
pub fn may_open(timestamp: u64, answered_below: u64) -> bool {
    timestamp == FIRST_TIMESTAMP && answered_below <= FIRST_TIMESTAMP
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
    /// The execution slot of the session's latest command.
    active: u64,
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
///
/// Sessions end as the log advances (see the module documentation): the table holds at most
/// `max_sessions` of them.
#[derive(Clone, Debug)]
pub struct ClientTable {
    window: u64,
    max_sessions: usize,
    timeout: u64,
    sessions: FastMap<u64, Session>,
    /// `(active, client)` for every slot at which a session became active, in that order
    /// (slots only grow, so `active` never decreases along it): the expiry order. An entry whose
    /// session has been active again since, or has ended, is stale: skipped, and dropped when
    /// the queue is compacted. Appending here is what marking a session active costs, where a
    /// sorted index cost a removal and an insertion per command.
    activity: VecDeque<(u64, u64)>,
    /// Sessions ended since the last [`ClientTable::take_ended`], in the order they ended.
    ended: Vec<u64>,
    /// Sessions ended over the table's lifetime.
    ended_total: u64,
}

/// Stale entries the activity queue may hold beyond one per session before it is compacted.
const STALE_ACTIVITY_MAX: usize = 64;

/// A client table as checkpoints hold it: the live activity entries sorted, as a sorted set
/// of them serializes (the format does not depend on how the table keeps them).
#[derive(Serialize)]
struct WireRef<'a> {
    window: u64,
    max_sessions: usize,
    timeout: u64,
    sessions: &'a FastMap<u64, Session>,
    by_activity: Vec<(u64, u64)>,
    ended_total: u64,
}

/// [`WireRef`], decoded.
#[derive(Deserialize)]
struct Wire {
    window: u64,
    max_sessions: usize,
    timeout: u64,
    sessions: FastMap<u64, Session>,
    by_activity: Vec<(u64, u64)>,
    ended_total: u64,
}

impl Serialize for ClientTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (window, max_sessions, timeout) = (self.window, self.max_sessions, self.timeout);
        let by_activity = self.live_activity();
        let sessions = &self.sessions;
        WireRef { window, max_sessions, timeout, sessions, by_activity, ended_total: self.ended_total }
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ClientTable {
    /// The entries come sorted from [`ClientTable`]'s serialization; [`ClientTable::validate`]
    /// checks that they are, and that they match the sessions.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ClientTable, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        Ok(ClientTable {
            window: wire.window,
            max_sessions: wire.max_sessions,
            timeout: wire.timeout,
            sessions: wire.sessions,
            activity: wire.by_activity.into(),
            ended: Vec::new(),
            ended_total: wire.ended_total,
        })
    }
}

impl PartialEq for ClientTable {
    fn eq(&self, other: &ClientTable) -> bool {
        (self.window, self.max_sessions, self.timeout, self.ended_total)
            == (other.window, other.max_sessions, other.timeout, other.ended_total)
            && self.sessions == other.sessions
            && self.live_activity() == other.live_activity()
    }
}

impl Eq for ClientTable {}

/// One client's state, found once per command.
pub struct ClientEntry<'a> {
    session: &'a mut Session,
    window: u64,
    /// The table's sessions ended and not yet taken (those ended to make room for this one).
    ended: &'a mut Vec<u64>,
}

impl ClientEntry<'_> {
    /// The sessions ended to make room for this one (the application hears of them before the
    /// command executes), in the order they ended: [`ClientTable::take_ended`], while the
    /// entry is held.
    pub fn take_ended(&mut self) -> Vec<u64> {
        std::mem::take(self.ended)
    }

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
    /// An empty table that remembers at most `window` results per client, holds at most
    /// `max_sessions` sessions, and ends a session `timeout` execution slots after its latest
    /// command.
    pub fn new(window: u64, max_sessions: usize, timeout: u64) -> ClientTable {
        assert!(max_sessions > 0 && timeout > 0, "validated parameters");
        ClientTable {
            window,
            max_sessions,
            timeout,
            sessions: FastMap::default(),
            activity: VecDeque::new(),
            ended: Vec::new(),
            ended_total: 0,
        }
    }

    /// The session of `client` for a command with `timestamp` and `answered_below`, ordered at
    /// execution slot `now`: marked active at `now`, opened if it is the client's first command
    /// ([`may_open`]), `None` if the table does not hold the session and the command may not
    /// open it (the session ended).
    pub fn session(&mut self, client: u64, timestamp: u64, answered_below: u64, now: u64) -> Option<ClientEntry<'_>> {
        self.session_opened_if(client, may_open(timestamp, answered_below), now)
    }

    /// [`ClientTable::session`] with the opening rule decided by the caller: `opens` says whether
    /// the command may open a session the table does not hold. Sessions ended to make room for
    /// it can be taken from the entry ([`ClientEntry::take_ended`]).
    pub fn session_opened_if(&mut self, client: u64, opens: bool, now: u64) -> Option<ClientEntry<'_>> {
        if let Some(session) = self.sessions.get_mut(&client) {
            // Only a later slot moves the session in the expiry order; the executor asks twice
            // per command at the same slot.
            if now > session.active {
                session.active = now;
                self.mark_active(now, client);
            }
        } else {
            if !opens {
                return None;
            }
            while self.sessions.len() >= self.max_sessions {
                self.end_oldest();
            }
            self.sessions.insert(client, Session { active: now, ..Session::default() });
            self.mark_active(now, client);
        }
        debug_assert!(self.activity.len() >= self.sessions.len(), "every session has its activity entry");
        let session = self.sessions.get_mut(&client)?;
        Some(ClientEntry { session, window: self.window, ended: &mut self.ended })
    }

    /// Appends the entry of a session that became active at `now` (kept in slot order should a
    /// caller ever go back in the log), and drops stale entries once there are too many.
    fn mark_active(&mut self, now: u64, client: u64) {
        match self.activity.back() {
            Some((last, _)) if *last > now => {
                let at = self.activity.partition_point(|(active, _)| *active <= now);
                self.activity.insert(at, (now, client));
            }
            _ => self.activity.push_back((now, client)),
        }
        if self.activity.len() > 2 * self.sessions.len() + STALE_ACTIVITY_MAX {
            let sessions = &self.sessions;
            self.activity.retain(|(active, client)| sessions.get(client).is_some_and(|s| s.active == *active));
        }
    }

    /// True if `(active, client)` is the current entry of a held session.
    fn is_live(&self, active: u64, client: u64) -> bool {
        self.sessions.get(&client).is_some_and(|s| s.active == active)
    }

    /// The live entries of the activity queue, sorted by slot, then client.
    fn live_activity(&self) -> Vec<(u64, u64)> {
        let mut live: Vec<(u64, u64)> = self.activity.iter().copied().filter(|(a, c)| self.is_live(*a, *c)).collect();
        live.sort_unstable();
        live
    }

    /// Ends every session whose latest command is `timeout` or more slots before `now` (done
    /// before executing slot `now`, at every replica alike), in the order of slot, then client.
    pub fn expire(&mut self, now: u64) {
        let mut due = Vec::new();
        while let Some(&(active, client)) = self.activity.front() {
            if active.saturating_add(self.timeout) > now {
                break;
            }
            self.activity.pop_front();
            if self.is_live(active, client) {
                due.push((active, client));
            }
        }
        due.sort_unstable();
        for (_, client) in due {
            self.end(client);
        }
    }

    /// Ends the least recently active session: of those active at the oldest slot, the one with
    /// the smallest client id, as every replica decides whatever order it marked them in.
    fn end_oldest(&mut self) {
        while let Some(&(active, client)) = self.activity.front() {
            if self.is_live(active, client) {
                break;
            }
            self.activity.pop_front();
        }
        let Some(&(oldest, _)) = self.activity.front() else { return };
        let candidates = self.activity.iter().enumerate().take_while(|(_, (active, _))| *active == oldest);
        let live = candidates.filter(|(_, (active, client))| self.is_live(*active, *client));
        let Some((index, (_, client))) = live.min_by_key(|(_, (_, client))| *client) else { return };
        let client = *client;
        self.activity.remove(index);
        self.end(client);
    }

    fn end(&mut self, client: u64) {
        let removed = self.sessions.remove(&client);
        assert!(removed.is_some(), "the activity queue names only held sessions");
        self.ended.push(client);
        self.ended_total += 1;
    }

    /// The sessions ended since the last call, in the order they ended (for the application's
    /// session-expiry hook).
    pub fn take_ended(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.ended)
    }

    /// Sessions ended over the table's lifetime (by timeout or to stay within `max_sessions`).
    pub fn ended_total(&self) -> u64 {
        self.ended_total
    }

    /// True if `client` has a live session.
    pub fn has_session(&self, client: u64) -> bool {
        self.sessions.contains_key(&client)
    }

    /// Clients known to the table: its live sessions.
    pub fn clients(&self) -> usize {
        self.sessions.len()
    }

    /// Results held in total (state, for metrics and bounds).
    pub fn results_held(&self) -> usize {
        self.sessions.values().map(|s| s.results.len()).sum()
    }

    /// Checks a table (one decoded from a checkpoint above all): the activity entries are in
    /// slot order, and exactly one names each session at its latest slot.
    pub fn validate(&self) -> Result<(), String> {
        let in_order = self.activity.iter().zip(self.activity.iter().skip(1)).all(|(a, b)| a.0 <= b.0);
        let live: Vec<u64> =
            self.activity.iter().filter(|(active, client)| self.is_live(*active, *client)).map(|(_, c)| *c).collect();
        let distinct: std::collections::HashSet<&u64> = live.iter().collect();
        if !in_order || live.len() != self.sessions.len() || distinct.len() != live.len() {
            return Err("client table: the activity index does not match the sessions".into());
        }
        if self.sessions.len() > self.max_sessions || self.window == 0 || self.timeout == 0 {
            return Err("client table: out of its bounds".into());
        }
        Ok(())
    }

    /// A digest of the table that does not depend on hash-map order.
    pub fn digest(&self) -> u64 {
        let mut clients: Vec<(&u64, &Session)> = self.sessions.iter().collect();
        clients.sort_unstable_by_key(|(c, _)| **c);
        let mut hash = digest_bytes(b"clients");
        for (client, session) in clients {
            for number in [*client, session.highest, session.answered_below, session.active] {
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

    fn entry(t: &mut ClientTable, client: u64) -> ClientEntry<'_> {
        t.session(client, 1, 0, 0).unwrap()
    }

    fn table(window: u64) -> ClientTable {
        ClientTable::new(window, 1 << 20, 1 << 20)
    }

    fn check(t: &mut ClientTable, client: u64, timestamp: u64) -> Option<Vec<u8>> {
        match entry(t, client).check(timestamp) {
            Verdict::Execute => None,
            Verdict::Cached(r) => Some(r.to_vec()),
            Verdict::Expired => Some(b"expired".to_vec()),
            Verdict::SessionExpired => Some(b"session expired".to_vec()),
        }
    }

    /// Section III-C: t_cmd <= t_exec returns the cached result instead of executing again.
    #[test]
    fn a_duplicate_gets_the_cached_result() {
        let mut t = table(4);
        assert_eq!(check(&mut t, 7, 1), None);
        entry(&mut t, 7).record(1, b"one".to_vec());
        assert_eq!(check(&mut t, 7, 1), Some(b"one".to_vec()));
        assert_eq!(check(&mut t, 7, 2), None);
        assert_eq!(check(&mut t, 8, 1), None, "clients are independent");
    }

    /// Pipelined commands may execute out of timestamp order; each executes exactly once.
    #[test]
    fn out_of_order_commands_inside_the_window_execute_once() {
        let mut t = table(4);
        entry(&mut t, 7).record(3, b"three".to_vec());
        assert_eq!(check(&mut t, 7, 2), None, "2 was not executed yet");
        entry(&mut t, 7).record(2, b"two".to_vec());
        assert_eq!(check(&mut t, 7, 2), Some(b"two".to_vec()));
        assert_eq!(check(&mut t, 7, 3), Some(b"three".to_vec()));
    }

    #[test]
    fn results_leave_the_window() {
        let mut t = table(2);
        for ts in 1..=5 {
            entry(&mut t, 7).record(ts, vec![ts as u8]);
        }
        assert_eq!(t.results_held(), 2);
        assert_eq!(check(&mut t, 7, 3), Some(b"expired".to_vec()));
        assert_eq!(check(&mut t, 7, 4), Some(vec![4]));
    }

    /// Acknowledged results are forgotten, and their commands are never executed again.
    #[test]
    fn acknowledged_results_are_forgotten() {
        let mut t = table(64);
        for ts in 1..=3 {
            entry(&mut t, 7).record(ts, vec![ts as u8]);
        }
        entry(&mut t, 7).acknowledge(3);
        assert_eq!(t.results_held(), 1);
        assert_eq!(check(&mut t, 7, 1), Some(b"expired".to_vec()), "answered, forgotten, not executed again");
        assert_eq!(check(&mut t, 7, 3), Some(vec![3]));
        entry(&mut t, 7).acknowledge(2);
        assert_eq!(t.results_held(), 1, "acknowledgements never move back");
    }

    #[test]
    fn digests_ignore_insertion_order() {
        let (mut a, mut b) = (table(4), table(4));
        for c in 0..50 {
            entry(&mut a, c).record(1, vec![c as u8]);
            entry(&mut b, 49 - c).record(1, vec![(49 - c) as u8]);
        }
        assert_eq!(a.digest(), b.digest());
        entry(&mut b, 3).record(2, vec![]);
        assert_ne!(a.digest(), b.digest());
    }

    /// Sessions end `timeout` slots after their latest command, oldest first, and a command
    /// that claims answers from an ended session is refused, not executed again.
    #[test]
    fn sessions_expire_by_log_position() {
        let mut t = ClientTable::new(4, 100, 10);
        t.session(1, 1, 1, 0).unwrap().record(1, b"a".to_vec());
        t.session(2, 1, 1, 5).unwrap().record(1, b"b".to_vec());
        t.expire(9);
        assert_eq!(t.clients(), 2);
        t.expire(10);
        assert_eq!((t.clients(), t.take_ended()), (1, vec![1]));
        assert!(t.session(1, 2, 2, 11).is_none(), "claims an answer from an ended session");
        assert!(!t.has_session(1), "a refused command opens nothing");
        t.session(2, 2, 2, 12).unwrap();
        t.expire(20);
        assert!(t.has_session(2), "traffic keeps a session alive");
        t.expire(22);
        assert_eq!((t.clients(), t.take_ended(), t.ended_total()), (0, vec![2], 2));
        t.validate().unwrap();
    }

    /// Asking again at the same or an earlier slot leaves the session where it is in the expiry
    /// order; a later slot moves it.
    #[test]
    fn only_a_later_slot_moves_a_session_in_the_expiry_order() {
        let mut t = ClientTable::new(4, 100, 10);
        t.session(1, 1, 1, 5).unwrap();
        t.session(1, 1, 1, 5).unwrap();
        t.session(1, 1, 1, 3).unwrap();
        t.validate().unwrap();
        t.expire(14);
        assert!(t.has_session(1), "active at slot 5, not at 3");
        t.session(1, 2, 2, 8).unwrap();
        t.validate().unwrap();
        t.expire(17);
        assert!(t.has_session(1), "active at slot 8 now");
        t.expire(18);
        assert_eq!(t.take_ended(), vec![1]);
        t.validate().unwrap();
    }

    /// Only a client's first command opens a session; any other of an unknown client is refused.
    #[test]
    fn only_the_first_command_opens_a_session() {
        let mut t = ClientTable::new(4, 100, 10);
        for (timestamp, answered_below) in [(2, 0), (2, 1), (5, 0), (1, 2), (9, 9)] {
            assert!(t.session(7, timestamp, answered_below, 0).is_none(), "t{timestamp} ab{answered_below} opened");
        }
        assert_eq!(t.clients(), 0, "refused commands open nothing");
        assert!(t.session(7, 1, 0, 0).is_some() && t.session(8, 1, 1, 0).is_some());
        assert!(t.session(7, 5, 0, 1).is_some(), "a held session takes any timestamp");
    }

    /// The gap: a client whose commands 2..=8 executed after its opener was answered, but whose
    /// answers were lost, stays silent for a whole timeout and retransmits them claiming no
    /// answer beyond the opener's (or none at all): every one is refused, none executes again.
    #[test]
    fn commands_retransmitted_after_expiry_never_execute_again() {
        let mut t = ClientTable::new(16, 100, 10);
        t.session(7, 1, 1, 0).unwrap().record(1, Vec::new());
        for timestamp in 2..=8 {
            let mut entry = t.session(7, timestamp, 2, timestamp).unwrap();
            assert_eq!(entry.check(timestamp), Verdict::Execute);
            entry.record(timestamp, vec![timestamp as u8]);
        }
        t.expire(8 + 10);
        assert_eq!(t.take_ended(), vec![7]);
        for answered_below in [0, 1, 2] {
            for timestamp in 2..=8 {
                assert!(t.session(7, timestamp, answered_below, 20 + timestamp).is_none(), "t{timestamp} reopened");
            }
        }
        assert_eq!(t.clients(), 0);
    }

    /// The opener's answer was lost and its session ended: retransmitted, it opens a new
    /// session, where a keep-alive executing again changes nothing, and the client's later
    /// commands run once in that session.
    #[test]
    fn an_opener_retransmitted_after_expiry_opens_a_new_session() {
        let mut t = ClientTable::new(16, 100, 10);
        t.session(7, 1, 1, 0).unwrap().record(1, Vec::new());
        t.expire(10);
        assert_eq!(t.take_ended(), vec![7]);
        let mut entry = t.session(7, 1, 1, 11).expect("the opener opens a new session");
        assert_eq!(entry.check(1), Verdict::Execute);
        entry.record(1, Vec::new());
        assert_eq!(t.session(7, 1, 1, 12).unwrap().check(1), Verdict::Cached(&[]), "once per session");
        let mut entry = t.session(7, 2, 2, 13).unwrap();
        assert_eq!(entry.check(2), Verdict::Execute);
        entry.record(2, b"two".to_vec());
        assert_eq!(t.session(7, 2, 2, 14).unwrap().check(2), Verdict::Cached(b"two"));
    }

    /// A full table ends its least recently active session to open a new one.
    #[test]
    fn a_full_table_ends_the_oldest_session() {
        let mut t = ClientTable::new(4, 3, 1000);
        for client in 0..5 {
            t.session(client, 1, 0, client).unwrap();
        }
        t.session(2, 2, 2, 10).unwrap();
        t.session(9, 1, 0, 11).unwrap();
        assert_eq!(t.clients(), 3);
        assert_eq!(t.take_ended(), vec![0, 1, 3]);
        assert!(t.has_session(2) && t.has_session(4) && t.has_session(9));
        t.validate().unwrap();
    }

    /// The activity entries a busy table marks are dropped as they go stale: a session touched
    /// at every slot costs one live entry, not one per command.
    #[test]
    fn stale_activity_entries_stay_bounded() {
        let mut t = ClientTable::new(4, 100, 1 << 30);
        for slot in 0..10_000 {
            t.session(slot % 3, 1, 1, slot).unwrap();
        }
        assert!(t.activity.len() <= 2 * 3 + STALE_ACTIVITY_MAX + 1, "{} entries", t.activity.len());
        t.validate().unwrap();
        t.expire(9_998 + (1 << 30));
        assert_eq!(t.take_ended(), vec![9_997 % 3, 9_998 % 3], "the oldest first, the newest stays");
    }

    /// Checkpoints hold the table as before: the live entries as a sorted set, whatever stale
    /// entries the live table keeps; a decoded table is equal, valid and expires alike.
    #[test]
    fn a_checkpoint_holds_the_sorted_live_entries() {
        #[derive(Serialize)]
        struct SortedSetForm<'a> {
            window: u64,
            max_sessions: usize,
            timeout: u64,
            sessions: &'a FastMap<u64, Session>,
            by_activity: std::collections::BTreeSet<(u64, u64)>,
            ended_total: u64,
        }
        let mut t = ClientTable::new(4, 100, 50);
        for slot in 0..40 {
            t.session(slot % 5, 1, 1, slot / 2).unwrap().record(1, vec![slot as u8]);
        }
        let bytes = bincode::serialize(&t).unwrap();
        let by_activity = t.sessions.iter().map(|(client, s)| (s.active, *client)).collect();
        let (window, max_sessions, timeout, ended_total) = (t.window, t.max_sessions, t.timeout, t.ended_total);
        let sessions = &t.sessions;
        let set = SortedSetForm { window, max_sessions, timeout, sessions, by_activity, ended_total };
        assert_eq!(bytes, bincode::serialize(&set).unwrap(), "the same bytes as a sorted set");
        let mut decoded: ClientTable = bincode::deserialize(&bytes).unwrap();
        decoded.validate().unwrap();
        assert_eq!(decoded, t);
        decoded.expire(18 + 50);
        t.expire(18 + 50);
        assert_eq!(decoded.take_ended(), t.take_ended());
        assert_eq!(decoded, t);
    }

    /// Sessions active at the same slot end in client order, both to make room and by timeout,
    /// in whatever order they were marked: a table decoded from a checkpoint decides alike.
    #[test]
    fn ties_end_in_client_order_whatever_the_marking_order() {
        let mut t = ClientTable::new(4, 3, 10);
        for client in [9, 4, 7] {
            t.session(client, 1, 0, 5).unwrap();
        }
        let mut decoded: ClientTable = bincode::deserialize(&bincode::serialize(&t).unwrap()).unwrap();
        for table in [&mut t, &mut decoded] {
            table.session(1, 1, 0, 6).unwrap();
            assert_eq!(table.take_ended(), vec![4], "the smallest id of the oldest slot makes room");
            table.expire(16);
            assert_eq!(table.take_ended(), vec![7, 9, 1], "then by slot, ties by client id");
        }
    }
}
