//! Replicated services: the [`Application`] trait and two services that implement it.
//!
//! [`coordination`] is the coordination service of the paper's evaluation (Section VI): a tree of
//! znodes in the style of ZooKeeper. [`kv`] is a minimal key-value store.

pub mod coordination;
pub mod kv;

/// A deterministic state machine replicated by TARA.
///
/// Every executor replica holds one instance and applies the same operations in the same order,
/// so `execute` must depend only on the state and the operation: no clocks, no randomness, no
/// iteration over unordered containers that leaks into results.
pub trait Application {
    /// Applies one operation and returns its result. Malformed operations must be answered
    /// with an error result, never a panic: operation bytes come from clients.
    fn execute(&mut self, op: &[u8]) -> Vec<u8>;
    /// Applies one operation of client session `client`; the default ignores the client.
    /// Services with per-session state (ephemeral nodes) override it.
    fn execute_for(&mut self, client: u64, op: &[u8]) -> Vec<u8> {
        let _ = client;
        self.execute(op)
    }
    /// Client session `client` ended, at the same point of the log at every replica: drop
    /// whatever state lives only as long as the session. The default keeps everything.
    fn session_expired(&mut self, client: u64) {
        let _ = client;
    }
    /// The whole state as bytes; `restore` on a fresh instance must recreate it exactly.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the state with one produced by `snapshot`.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError>;
    /// A digest of the state; replicas with equal state have equal digests.
    fn digest(&self) -> u64 {
        digest_bytes(&self.snapshot())
    }
}

/// A hash map with a fast, DoS-resistant hasher (foldhash). Its iteration order differs between
/// replicas, so nothing observable may depend on it: snapshots and digests sort first.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A snapshot that could not be restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreError(pub String);

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot restore snapshot: {}", self.0)
    }
}

impl std::error::Error for RestoreError {}

/// A 64-bit digest (xxh3) that is the same on every platform and build.
pub fn digest_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Continues a digest with more bytes (for hash chains): the previous digest is the seed.
pub fn digest_extend(hash: u64, bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, hash)
}
