//! A minimal replicated key-value store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Application, RestoreError};

/// An operation on the key-value store.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum KvOp {
    /// Stores `value` under `key`; answers the previous value.
    Put {
        /// The key.
        key: String,
        /// The new value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Reads `key`.
    Get {
        /// The key.
        key: String,
    },
    /// Removes `key`; answers the removed value.
    Delete {
        /// The key.
        key: String,
    },
}

/// The result of a [`KvOp`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum KvResult {
    /// The value before the operation (`Put`, `Delete`) or the current value (`Get`).
    Value(Option<Vec<u8>>),
    /// The operation bytes did not decode.
    Malformed(String),
}

impl KvOp {
    /// The operation as bytes for [`Application::execute`].
    pub fn encode(&self) -> Vec<u8> {
        bincode::serialize(self).unwrap_or_default()
    }
}

impl KvResult {
    /// Decodes a result produced by [`KvStore`].
    pub fn decode(bytes: &[u8]) -> Result<KvResult, String> {
        bincode::deserialize(bytes).map_err(|e| format!("malformed key-value result: {e}"))
    }
}

/// A key-value store kept in key order (so snapshots are deterministic).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    entries: BTreeMap<String, Vec<u8>>,
}

impl KvStore {
    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    fn apply(&mut self, op: KvOp) -> KvResult {
        match op {
            KvOp::Put { key, value } => KvResult::Value(self.entries.insert(key, value)),
            KvOp::Get { key } => KvResult::Value(self.entries.get(&key).cloned()),
            KvOp::Delete { key } => KvResult::Value(self.entries.remove(&key)),
        }
    }
}

impl Application for KvStore {
    fn execute(&mut self, op: &[u8]) -> Vec<u8> {
        let result = match bincode::deserialize::<KvOp>(op) {
            Ok(op) => self.apply(op),
            Err(e) => KvResult::Malformed(format!("cannot decode key-value operation: {e}")),
        };
        bincode::serialize(&result).unwrap_or_default()
    }

    fn snapshot(&self) -> Vec<u8> {
        bincode::serialize(&self.entries).unwrap_or_default()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        self.entries = bincode::deserialize(snapshot).map_err(|e| RestoreError(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(store: &mut KvStore, op: KvOp) -> KvResult {
        KvResult::decode(&store.execute(&op.encode())).unwrap()
    }

    #[test]
    fn put_get_delete() {
        let mut s = KvStore::default();
        assert_eq!(run(&mut s, KvOp::Put { key: "a".into(), value: b"1".to_vec() }), KvResult::Value(None));
        assert_eq!(run(&mut s, KvOp::Get { key: "a".into() }), KvResult::Value(Some(b"1".to_vec())));
        assert_eq!(run(&mut s, KvOp::Delete { key: "a".into() }), KvResult::Value(Some(b"1".to_vec())));
        assert_eq!(run(&mut s, KvOp::Get { key: "a".into() }), KvResult::Value(None));
    }

    #[test]
    fn malformed_operations_get_an_error() {
        let mut s = KvStore::default();
        let result = KvResult::decode(&s.execute(&[0xff, 0xff, 0xff])).unwrap();
        assert!(matches!(result, KvResult::Malformed(_)));
    }

    #[test]
    fn snapshot_restores_the_same_state() {
        let mut s = KvStore::default();
        run(&mut s, KvOp::Put { key: "a".into(), value: b"1".to_vec() });
        let mut t = KvStore::default();
        t.restore(&s.snapshot()).unwrap();
        assert_eq!(s, t);
        assert_eq!(s.digest(), t.digest());
        assert!(t.restore(&[1, 2, 3]).is_err());
    }
}
