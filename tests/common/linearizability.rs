//! A linearizability checker for key-value histories (Wing and Gong's search with Lowe's
//! memoization, as in Porcupine), partitioned by key: a history is linearizable iff the history
//! of every key is (P-compositionality, Horn and Kroening 2015).
//!
//! Operations are `Put` (answers the previous value), `Get` and `Delete` (answers the removed
//! value). An operation that never got a response may have taken effect or not: it is placed at
//! the end of time with any result, which lets the search linearize it anywhere after its
//! invocation or effectively drop it.

use std::collections::{BTreeMap, HashSet};

use tara::app::kv::{KvOp, KvResult};

/// One client operation as observed by the client: real (or simulated) invocation and response
/// times, and the result if a response arrived.
#[derive(Clone, Debug)]
pub struct Operation {
    /// The client that issued it.
    pub client: u64,
    /// When the client invoked it.
    pub invoke: u64,
    /// When the response arrived (`None`: never).
    pub response: Option<u64>,
    /// The operation.
    pub op: KvOp,
    /// The result (`None`: no response).
    pub result: Option<KvResult>,
}

fn key_of(op: &KvOp) -> &str {
    match op {
        KvOp::Put { key, .. } | KvOp::Get { key } | KvOp::Delete { key } => key,
    }
}

/// Applies `op` to a register holding `state`; returns the new state if the observed result is
/// possible.
fn step(state: &Option<Vec<u8>>, op: &KvOp, result: &Option<KvResult>) -> Option<Option<Vec<u8>>> {
    let (answer, next) = match op {
        KvOp::Put { value, .. } => (state.clone(), Some(value.clone())),
        KvOp::Get { .. } => (state.clone(), state.clone()),
        KvOp::Delete { .. } => (state.clone(), None),
    };
    match result {
        None => Some(next),
        Some(KvResult::Value(observed)) if *observed == answer => Some(next),
        Some(_) => None,
    }
}

/// Checks a whole history; the error names a key whose history is not linearizable.
pub fn check(history: &[Operation]) -> Result<(), String> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for operation in history {
        by_key.entry(key_of(&operation.op)).or_default().push(operation);
    }
    for (key, operations) in by_key {
        if !check_key(&operations) {
            let mut lines: Vec<String> = operations
                .iter()
                .map(|o| format!("  client {} [{}, {:?}] {:?} -> {:?}", o.client, o.invoke, o.response, o.op, o.result))
                .collect();
            lines.sort();
            return Err(format!("the history of key {key:?} is not linearizable:\n{}", lines.join("\n")));
        }
    }
    Ok(())
}

/// An event of the search's doubly linked list: the call or the return of operation `op`.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

/// The search over one key's operations. Events are kept in a doubly linked list in time order
/// (index 0 is the head sentinel); linearizing an operation lifts its call and return out of
/// the list, backtracking puts them back.
fn check_key(operations: &[&Operation]) -> bool {
    let n = operations.len();
    let mut times: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, o) in operations.iter().enumerate() {
        times.push((o.invoke, true, i));
        times.push((o.response.unwrap_or(u64::MAX), false, i));
    }
    // At equal times calls come first: touching intervals count as concurrent.
    times.sort_by_key(|(t, is_call, i)| (*t, !*is_call, *i));
    let mut events = vec![Event { op: usize::MAX, is_call: false, prev: 0, next: 1 }];
    let (mut call_of, mut return_of) = (vec![0; n], vec![0; n]);
    for (index, (_, is_call, op)) in times.iter().enumerate() {
        let position = index + 1;
        events.push(Event { op: *op, is_call: *is_call, prev: position - 1, next: position + 1 });
        if *is_call { call_of[*op] = position } else { return_of[*op] = position }
    }
    let end = events.len();
    let lift = |events: &mut Vec<Event>, at: usize| {
        let (prev, next) = (events[at].prev, events[at].next);
        events[prev].next = next;
        if next < end {
            events[next].prev = prev;
        }
    };
    let unlift = |events: &mut Vec<Event>, at: usize| {
        let (prev, next) = (events[at].prev, events[at].next);
        events[prev].next = at;
        if next < end {
            events[next].prev = at;
        }
    };

    let mut state: Option<Vec<u8>> = None;
    let mut linearized = vec![false; n];
    let mut seen: HashSet<(Vec<bool>, Option<Vec<u8>>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<Vec<u8>>)> = Vec::new();
    let mut entry = events[0].next;
    loop {
        if events[0].next >= end {
            return true;
        }
        if entry >= end {
            return false;
        }
        let event = events[entry];
        if event.is_call {
            let operation = operations[event.op];
            if let Some(next_state) = step(&state, &operation.op, &operation.result) {
                linearized[event.op] = true;
                if seen.insert((linearized.clone(), next_state.clone())) {
                    stack.push((event.op, std::mem::replace(&mut state, next_state)));
                    lift(&mut events, call_of[event.op]);
                    lift(&mut events, return_of[event.op]);
                    entry = events[0].next;
                    continue;
                }
                linearized[event.op] = false;
            }
            entry = event.next;
        } else {
            // A return whose call is still in the list: backtrack.
            let Some((op, previous)) = stack.pop() else { return false };
            state = previous;
            linearized[op] = false;
            unlift(&mut events, return_of[op]);
            unlift(&mut events, call_of[op]);
            entry = events[call_of[op]].next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(client: u64, invoke: u64, response: u64, value: u8, previous: Option<u8>) -> Operation {
        Operation {
            client,
            invoke,
            response: Some(response),
            op: KvOp::Put { key: "k".into(), value: vec![value] },
            result: Some(KvResult::Value(previous.map(|p| vec![p]))),
        }
    }

    fn get(client: u64, invoke: u64, response: u64, value: Option<u8>) -> Operation {
        Operation {
            client,
            invoke,
            response: Some(response),
            op: KvOp::Get { key: "k".into() },
            result: Some(KvResult::Value(value.map(|v| vec![v]))),
        }
    }

    #[test]
    fn sequential_histories_are_linearizable() {
        assert!(check(&[put(1, 0, 1, 7, None), get(1, 2, 3, Some(7)), put(2, 4, 5, 8, Some(7))]).is_ok());
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // The get overlaps the put, so it may see the old or the new value.
        assert!(check(&[put(1, 0, 10, 7, None), get(2, 1, 2, None)]).is_ok());
        assert!(check(&[put(1, 0, 10, 7, None), get(2, 1, 2, Some(7))]).is_ok());
    }

    /// The checker rejects what is not linearizable.
    #[test]
    fn a_stale_read_is_rejected() {
        // The put finished before the get started, yet the get sees the old value.
        let err = check(&[put(1, 0, 1, 7, None), get(2, 2, 3, None)]).unwrap_err();
        assert!(err.contains("not linearizable"), "{err}");
    }

    #[test]
    fn a_lost_write_is_rejected() {
        // Two sequential puts; the second reports no previous value, as if the first was lost.
        assert!(check(&[put(1, 0, 1, 7, None), put(2, 2, 3, 8, None)]).is_err());
    }

    #[test]
    fn a_value_never_written_is_rejected() {
        assert!(check(&[get(1, 0, 1, Some(9))]).is_err());
    }

    #[test]
    fn reads_must_agree_on_one_order() {
        // Two concurrent puts; two later reads each see a different winner: impossible.
        let h = [put(1, 0, 5, 1, None), put(2, 0, 5, 2, None), get(3, 6, 7, Some(1)), get(4, 8, 9, Some(2))];
        assert!(check(&h).is_err());
    }

    #[test]
    fn a_pending_operation_may_or_may_not_have_taken_effect() {
        let pending = Operation {
            client: 1,
            invoke: 0,
            response: None,
            op: KvOp::Put { key: "k".into(), value: vec![5] },
            result: None,
        };
        assert!(check(&[pending.clone(), get(2, 1, 2, Some(5))]).is_ok());
        assert!(check(&[pending.clone(), get(2, 1, 2, None)]).is_ok());
        // But not before its invocation.
        let late = Operation { invoke: 10, ..pending };
        assert!(check(&[late, get(2, 1, 2, Some(5))]).is_err());
    }

    #[test]
    fn a_long_history_checks_quickly() {
        let mut history = Vec::new();
        let mut previous = None;
        for i in 0..200u64 {
            let value = (i % 250) as u8;
            history.push(put(i % 5, 10 * i, 10 * i + 5, value, previous));
            previous = Some(value);
            history.push(get(i % 5 + 5, 10 * i + 1, 10 * i + 9, None.or(Some(value))));
        }
        assert!(check(&history).is_ok());
    }
}
