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
    /// The whole state as bytes; `restore` on a fresh instance must recreate it exactly.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the state with one produced by `snapshot`.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError>;
    /// A digest of the state; replicas with equal state have equal digests.
    fn digest(&self) -> u64 {
        fnv1a(&self.snapshot())
    }
}

/// A snapshot that could not be restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreError(pub String);

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot restore snapshot: {}", self.0)
    }
}

impl std::error::Error for RestoreError {}

/// 64-bit FNV-1a: a digest that is the same on every platform, build and Rust version.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_extend(0xcbf2_9ce4_8422_2325, bytes)
}

/// Continues an FNV-1a digest with more bytes (for hash chains).
pub fn fnv1a_extend(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= *byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
