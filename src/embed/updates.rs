//! Typed state changes: what each executed command changed in a replicated service's state,
//! as `((key, value), diff)` updates (an insert is +1, a removal -1).

use std::collections::BTreeMap;

use crate::app::coordination::{CoordOp, CoordResponse, decode_result};
use crate::app::kv::KvOp;
use crate::protocol::Executed;

/// One state change: an entry `(key, value)` inserted (+1) or removed (-1).
pub type Update<K, V> = ((K, V), isize);

/// Derives a service's state changes from its executed commands. Fed each executed command
/// exactly once, in log order (as [`crate::embed::Embedded::executed`] carries them), it keeps
/// what it needs of the state to retract old values.
pub trait StateUpdates: 'static {
    /// What identifies an entry of the state.
    type Key;
    /// An entry's value.
    type Value;
    /// Appends the changes `executed` made to `out`.
    fn updates(&mut self, executed: &Executed, out: &mut Vec<Update<Self::Key, Self::Value>>);
}

/// The key-value store's state as `(key, value)` entries.
///
/// ```
/// use tara::app::kv::KvOp;
/// use tara::embed::{KvUpdates, StateUpdates};
/// use tara::protocol::{Command, Executed};
///
/// let executed = |position, op: KvOp| {
///     let command = Command::new(1, position + 1, op.encode());
///     Executed { executor: 0, sequence: position, index: 0, position, command, result: vec![] }
/// };
/// let (mut kv, mut out) = (KvUpdates::default(), Vec::new());
/// kv.updates(&executed(0, KvOp::Put { key: "a".into(), value: vec![1] }), &mut out);
/// kv.updates(&executed(1, KvOp::Put { key: "a".into(), value: vec![2] }), &mut out);
/// let a = |v: u8| ("a".to_string(), vec![v]);
/// assert_eq!(out, vec![(a(1), 1), (a(1), -1), (a(2), 1)]);
/// ```
#[derive(Clone, Debug, Default)]
pub struct KvUpdates {
    entries: BTreeMap<String, Vec<u8>>,
}

impl StateUpdates for KvUpdates {
    type Key = String;
    type Value = Vec<u8>;

    fn updates(&mut self, executed: &Executed, out: &mut Vec<Update<String, Vec<u8>>>) {
        // An operation that does not decode changed nothing (the store answered `Malformed`).
        match bincode::deserialize::<KvOp>(&executed.command.op) {
            Ok(KvOp::Put { key, value }) => {
                if let Some(old) = self.entries.insert(key.clone(), value.clone()) {
                    out.push(((key.clone(), old), -1));
                }
                out.push(((key, value), 1));
            }
            Ok(KvOp::Delete { key }) => {
                if let Some(old) = self.entries.remove(&key) {
                    out.push(((key, old), -1));
                }
            }
            Ok(KvOp::Get { .. }) | Err(_) => {}
        }
    }
}

/// The coordination service's state as `(path, (data, version))` entries, one per znode.
#[derive(Clone, Debug, Default)]
pub struct CoordUpdates {
    znodes: BTreeMap<String, (Vec<u8>, u32)>,
}

impl StateUpdates for CoordUpdates {
    type Key = String;
    type Value = (Vec<u8>, u32);

    fn updates(&mut self, executed: &Executed, out: &mut Vec<Update<String, (Vec<u8>, u32)>>) {
        let (Ok(op), Ok(Ok(response))) =
            (bincode::deserialize::<CoordOp>(&executed.command.op), decode_result(&executed.result))
        else {
            return; // Failed operations change nothing.
        };
        let (path, entry) = match (op, response) {
            (CoordOp::Create { data, .. }, CoordResponse::Created { path }) => (path, Some((data, 0))),
            (CoordOp::SetData { path, data, .. }, CoordResponse::Set(stat)) => (path, Some((data, stat.version))),
            (CoordOp::Delete { path, .. }, CoordResponse::Deleted) => (path, None),
            _ => return,
        };
        let old = match entry.clone() {
            Some(entry) => self.znodes.insert(path.clone(), entry),
            None => self.znodes.remove(&path),
        };
        if let Some(old) = old {
            out.push(((path.clone(), old), -1));
        }
        if let Some(entry) = entry {
            out.push(((path, entry), 1));
        }
    }
}
