//! The coordination service of the paper's evaluation (Section VI-B): a tree of znodes.
//!
//! Every znode has a path (`/a/b`), data, a data version that `set_data` increments, and
//! children. Operations mirror ZooKeeper's: create (optionally sequential), delete and set data
//! with an expected version, get data, exists, get children. Each fails with a
//! [`CoordError`] that says what went wrong; malformed operations are answered, never executed.
//!
//! ```
//! use tara::app::Application;
//! use tara::app::coordination::{CoordOp, CoordResponse, Coordination, decode_result};
//!
//! let mut service = Coordination::default();
//! let op = CoordOp::Create { path: "/app".into(), data: b"x".to_vec(), sequential: false };
//! let result = decode_result(&service.execute(&op.encode())).unwrap();
//! assert_eq!(result, Ok(CoordResponse::Created { path: "/app".into() }));
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Application, FastMap, RestoreError};

/// The longest path accepted, in bytes.
pub const PATH_BYTES_MAX: usize = 1024;
/// The most data a znode may hold, in bytes (ZooKeeper's default limit).
pub const DATA_BYTES_MAX: usize = 1 << 20;
/// The largest result an operation may produce, in bytes (`max_result_bytes`). A larger one
/// (the children of a parent with very many, or a znode's data near [`DATA_BYTES_MAX`]) is
/// replaced by [`CoordError::TooLarge`]: its reply frame would exceed the clients' frame limit
/// ([`crate::net::wire::MAX_FRAME_BYTES`]), so the client could never read it and would
/// retransmit it forever. A constant, so that every replica decides alike (determinism).
/// The cluster's configuration checks it against that limit.
pub const RESULT_BYTES_MAX: usize = (1 << 20) - RESULT_ENVELOPE_BYTES;
/// Room left in a frame for what wraps a result: the reply's header and the frame's.
pub const RESULT_ENVELOPE_BYTES: usize = 4096;
const _: () = assert!(RESULT_BYTES_MAX >= DATA_BYTES_MAX / 2, "results hold large znodes");

/// An operation on the coordination service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum CoordOp {
    /// Creates a znode; with `sequential`, a 10-digit counter of the parent is appended to the
    /// name, so concurrent creators get distinct, ordered names.
    Create {
        /// The path (or path prefix when sequential).
        path: String,
        /// The initial data.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Append the parent's sequence counter to the name.
        sequential: bool,
    },
    /// Deletes a znode that has no children, if its version matches (any version if `None`).
    Delete {
        /// The path.
        path: String,
        /// The expected data version.
        version: Option<u32>,
    },
    /// Replaces a znode's data if its version matches (any version if `None`).
    SetData {
        /// The path.
        path: String,
        /// The new data.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// The expected data version.
        version: Option<u32>,
    },
    /// Reads a znode's data, version and number of children.
    GetData {
        /// The path.
        path: String,
    },
    /// Tells whether a znode exists, with its stat.
    Exists {
        /// The path.
        path: String,
    },
    /// Lists a znode's children, in name order.
    GetChildren {
        /// The path.
        path: String,
    },
    /// Creates a znode like [`CoordOp::Create`], owned by the client session that issues it:
    /// deleted, at every replica at the same point of the log, when that session ends
    /// (ZooKeeper's ephemeral nodes). Ephemeral znodes have no children.
    CreateEphemeral {
        /// The path (or path prefix when sequential).
        path: String,
        /// The initial data.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Append the parent's sequence counter to the name.
        sequential: bool,
    },
}

/// The metadata of a znode.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stat {
    /// The data version: 0 at creation, incremented by every `SetData`.
    pub version: u32,
    /// The number of children.
    pub num_children: u32,
}

/// A successful answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum CoordResponse {
    /// The znode was created under this path.
    Created {
        /// The path of the new znode (with the sequence suffix if sequential).
        path: String,
    },
    /// The znode was deleted.
    Deleted,
    /// The data was replaced; the new stat.
    Set(Stat),
    /// The data and stat of a znode.
    Data {
        /// The data.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// The stat.
        stat: Stat,
    },
    /// Whether the znode exists, and its stat if it does.
    Exists(Option<Stat>),
    /// The names of the children, sorted.
    Children(Vec<String>),
}

/// Why an operation failed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum CoordError {
    /// The znode does not exist.
    NoNode(String),
    /// A znode already exists at the path.
    NodeExists(String),
    /// The expected version does not match the znode's version.
    BadVersion {
        /// The path.
        path: String,
        /// The version the operation expected.
        expected: u32,
        /// The znode's version.
        actual: u32,
    },
    /// The znode has children and cannot be deleted.
    NotEmpty(String),
    /// The parent of the path does not exist.
    NoParent(String),
    /// The operation is malformed (bad path, too much data, undecodable bytes).
    Malformed(String),
    /// The result would exceed [`RESULT_BYTES_MAX`]; the operation changed nothing (only reads
    /// produce results this large).
    TooLarge {
        /// The result's size in bytes.
        bytes: usize,
        /// The bound, [`RESULT_BYTES_MAX`].
        bound: usize,
    },
}

impl std::fmt::Display for CoordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoordError::NoNode(path) => write!(f, "no node: {path} does not exist"),
            CoordError::NodeExists(path) => write!(f, "node exists: {path} already exists"),
            CoordError::BadVersion { path, expected, actual } => {
                write!(f, "bad version: {path} is at version {actual}, the operation expected {expected}")
            }
            CoordError::NotEmpty(path) => write!(f, "not empty: {path} has children; delete them first"),
            CoordError::NoParent(path) => write!(f, "no parent: the parent of {path} does not exist; create it first"),
            CoordError::Malformed(reason) => write!(f, "malformed operation: {reason}"),
            CoordError::TooLarge { bytes, bound } => {
                write!(f, "result too large: {bytes} bytes, bound {bound} (`max_result_bytes`)")
            }
        }
    }
}

impl std::error::Error for CoordError {}

/// The outcome of an operation, as decoded from result bytes.
pub type CoordResult = Result<CoordResponse, CoordError>;

impl CoordOp {
    /// The operation as bytes for [`Application::execute`].
    pub fn encode(&self) -> Vec<u8> {
        bincode::serialize(self).unwrap_or_default()
    }

    /// True if the operation changes nothing.
    pub fn is_read(&self) -> bool {
        matches!(self, CoordOp::GetData { .. } | CoordOp::Exists { .. } | CoordOp::GetChildren { .. })
    }
}

/// [`CoordOp`] decoded in place: paths and data borrow from the operation bytes (the same
/// encoding, variant for variant), so executing a read allocates nothing but its answer.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum CoordOpRef<'a> {
    /// See [`CoordOp::Create`].
    Create {
        /// The path (or path prefix when sequential).
        path: &'a str,
        /// The initial data.
        data: &'a [u8],
        /// Append the parent's sequence counter to the name.
        sequential: bool,
    },
    /// See [`CoordOp::Delete`].
    Delete {
        /// The path.
        path: &'a str,
        /// The expected data version.
        version: Option<u32>,
    },
    /// See [`CoordOp::SetData`].
    SetData {
        /// The path.
        path: &'a str,
        /// The new data.
        data: &'a [u8],
        /// The expected data version.
        version: Option<u32>,
    },
    /// See [`CoordOp::GetData`].
    GetData {
        /// The path.
        path: &'a str,
    },
    /// See [`CoordOp::Exists`].
    Exists {
        /// The path.
        path: &'a str,
    },
    /// See [`CoordOp::GetChildren`].
    GetChildren {
        /// The path.
        path: &'a str,
    },
    /// See [`CoordOp::CreateEphemeral`].
    CreateEphemeral {
        /// The path (or path prefix when sequential).
        path: &'a str,
        /// The initial data.
        data: &'a [u8],
        /// Append the parent's sequence counter to the name.
        sequential: bool,
    },
}

impl CoordOp {
    /// The operation, borrowed.
    pub fn as_ref(&self) -> CoordOpRef<'_> {
        match self {
            CoordOp::Create { path, data, sequential } => CoordOpRef::Create { path, data, sequential: *sequential },
            CoordOp::Delete { path, version } => CoordOpRef::Delete { path, version: *version },
            CoordOp::SetData { path, data, version } => CoordOpRef::SetData { path, data, version: *version },
            CoordOp::GetData { path } => CoordOpRef::GetData { path },
            CoordOp::Exists { path } => CoordOpRef::Exists { path },
            CoordOp::GetChildren { path } => CoordOpRef::GetChildren { path },
            CoordOp::CreateEphemeral { path, data, sequential } => {
                CoordOpRef::CreateEphemeral { path, data, sequential: *sequential }
            }
        }
    }
}

/// Decodes result bytes produced by [`Coordination::execute`].
pub fn decode_result(bytes: &[u8]) -> Result<CoordResult, String> {
    bincode::deserialize(bytes).map_err(|e| format!("malformed coordination result: {e}"))
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Znode {
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    version: u32,
    children: BTreeSet<String>,
    next_sequential: u64,
}

impl Znode {
    fn stat(&self) -> Stat {
        Stat { version: self.version, num_children: self.children.len() as u32 }
    }
}

/// The replicated tree of znodes. The root `/` always exists.
///
/// Znodes live in a hash map keyed by path (a lookup per operation, no string comparisons
/// along a tree); snapshots list them in path order, so equal trees have equal snapshots.
#[derive(Clone, Debug)]
pub struct Coordination {
    nodes: FastMap<String, Znode>,
    /// The owning client session of every ephemeral znode, by path.
    ephemeral: BTreeMap<String, u64>,
    /// The paths in order, for snapshots; dropped by create and delete, rebuilt on demand.
    sorted: RefCell<Option<Vec<String>>>,
}

impl PartialEq for Coordination {
    fn eq(&self, other: &Self) -> bool {
        self.nodes == other.nodes && self.ephemeral == other.ephemeral
    }
}

impl Eq for Coordination {}

impl Default for Coordination {
    fn default() -> Self {
        let mut nodes = FastMap::default();
        nodes.insert("/".to_string(), Znode::default());
        Coordination { nodes, ephemeral: BTreeMap::new(), sorted: RefCell::new(None) }
    }
}

/// Checks a path: absolute, no empty, `.` or `..` components, no trailing slash, no NUL.
pub fn validate_path(path: &str) -> Result<(), CoordError> {
    let bad = |why: &str| Err(CoordError::Malformed(format!("invalid path {path:?}: {why}")));
    if path.len() > PATH_BYTES_MAX {
        return bad(&format!("longer than {PATH_BYTES_MAX} bytes"));
    }
    if !path.starts_with('/') {
        return bad("must start with '/'");
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return bad("must not end with '/'");
    }
    if path.contains('\0') {
        return bad("must not contain NUL");
    }
    for component in path[1..].split('/') {
        match component {
            "" => return bad("empty component ('//')"),
            "." | ".." => return bad("'.' and '..' are not allowed"),
            _ => {}
        }
    }
    Ok(())
}

/// The parent path and the last component of a valid, non-root path.
fn split(path: &str) -> (&str, &str) {
    let cut = path.rfind('/').unwrap_or(0);
    let parent = if cut == 0 { "/" } else { &path[..cut] };
    (parent, &path[cut + 1..])
}

fn check_data(data: &[u8]) -> Result<(), CoordError> {
    if data.len() > DATA_BYTES_MAX {
        return Err(CoordError::Malformed(format!(
            "{} bytes of data exceed the limit of {DATA_BYTES_MAX}",
            data.len()
        )));
    }
    Ok(())
}

fn check_version(path: &str, expected: Option<u32>, actual: u32) -> Result<(), CoordError> {
    match expected {
        Some(expected) if expected != actual => {
            Err(CoordError::BadVersion { path: path.to_string(), expected, actual })
        }
        _ => Ok(()),
    }
}

impl Coordination {
    /// Applies a decoded operation.
    pub fn apply(&mut self, op: CoordOp) -> CoordResult {
        self.apply_ref(op.as_ref())
    }

    /// Applies an operation decoded in place; an ephemeral create needs a session
    /// ([`Coordination::apply_for`]).
    pub fn apply_ref(&mut self, op: CoordOpRef<'_>) -> CoordResult {
        self.apply_for(None, op)
    }

    /// Applies an operation of client session `client` (`None`: no session).
    pub fn apply_for(&mut self, client: Option<u64>, op: CoordOpRef<'_>) -> CoordResult {
        match op {
            CoordOpRef::CreateEphemeral { path, data, sequential } => {
                let owner = client.ok_or_else(|| {
                    CoordError::Malformed("an ephemeral znode needs a client session to own it".into())
                })?;
                let created = self.create(path, data, sequential)?;
                if let CoordResponse::Created { path } = &created {
                    self.ephemeral.insert(path.clone(), owner);
                }
                Ok(created)
            }
            CoordOpRef::Create { path, data, sequential } => self.create(path, data, sequential),
            CoordOpRef::Delete { path, version } => self.delete(path, version),
            CoordOpRef::SetData { path, data, version } => self.set_data(path, data, version),
            CoordOpRef::GetData { path } => {
                let node = self.node(path)?;
                Ok(CoordResponse::Data { data: node.data.clone(), stat: node.stat() })
            }
            CoordOpRef::Exists { path } => {
                validate_path(path)?;
                Ok(CoordResponse::Exists(self.nodes.get(path).map(Znode::stat)))
            }
            CoordOpRef::GetChildren { path } => {
                Ok(CoordResponse::Children(self.node(path)?.children.iter().cloned().collect()))
            }
        }
    }

    /// The ephemeral znodes and their owning sessions, in path order.
    pub fn ephemeral(&self) -> impl Iterator<Item = (&str, u64)> {
        self.ephemeral.iter().map(|(path, owner)| (path.as_str(), *owner))
    }

    /// True if a znode exists at `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    /// The number of znodes, the root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if only the root exists.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    fn node(&self, path: &str) -> Result<&Znode, CoordError> {
        validate_path(path)?;
        self.nodes.get(path).ok_or_else(|| CoordError::NoNode(path.to_string()))
    }

    fn create(&mut self, path: &str, data: &[u8], sequential: bool) -> CoordResult {
        validate_path(path)?;
        check_data(data)?;
        if path == "/" {
            return Err(CoordError::NodeExists(path.to_string()));
        }
        let (parent_path, _) = split(path);
        if self.ephemeral.contains_key(parent_path) {
            return Err(CoordError::Malformed(format!("{parent_path} is ephemeral and cannot have children")));
        }
        let parent = self.nodes.get_mut(parent_path).ok_or_else(|| CoordError::NoParent(path.to_string()))?;
        let path = if sequential {
            let numbered = format!("{path}{:010}", parent.next_sequential);
            parent.next_sequential += 1;
            numbered
        } else {
            path.to_string()
        };
        if self.nodes.contains_key(&path) {
            return Err(CoordError::NodeExists(path));
        }
        let (parent_path, name) = split(&path);
        if let Some(parent) = self.nodes.get_mut(parent_path) {
            parent.children.insert(name.to_string());
        }
        self.nodes.insert(path.clone(), Znode { data: data.to_vec(), ..Znode::default() });
        self.sorted.replace(None);
        Ok(CoordResponse::Created { path })
    }

    fn delete(&mut self, path: &str, version: Option<u32>) -> CoordResult {
        let node = self.node(path)?;
        if path == "/" {
            return Err(CoordError::Malformed("the root znode cannot be deleted".into()));
        }
        check_version(path, version, node.version)?;
        if !node.children.is_empty() {
            return Err(CoordError::NotEmpty(path.to_string()));
        }
        self.nodes.remove(path);
        self.ephemeral.remove(path);
        self.sorted.replace(None);
        let (parent_path, name) = split(path);
        if let Some(parent) = self.nodes.get_mut(parent_path) {
            parent.children.remove(name);
        }
        Ok(CoordResponse::Deleted)
    }

    fn set_data(&mut self, path: &str, data: &[u8], version: Option<u32>) -> CoordResult {
        validate_path(path)?;
        check_data(data)?;
        let node = self.nodes.get_mut(path).ok_or_else(|| CoordError::NoNode(path.to_string()))?;
        check_version(path, version, node.version)?;
        node.data.clear();
        node.data.extend_from_slice(data);
        node.version = node.version.wrapping_add(1);
        Ok(CoordResponse::Set(node.stat()))
    }
}

impl Application for Coordination {
    fn execute(&mut self, op: &[u8]) -> Vec<u8> {
        self.execute_session(None, op)
    }

    fn execute_for(&mut self, client: u64, op: &[u8]) -> Vec<u8> {
        self.execute_session(Some(client), op)
    }

    /// Deletes the session's ephemeral znodes (they have no children, so each deletes alone).
    fn session_expired(&mut self, client: u64) {
        let owned: Vec<String> = self.ephemeral.iter().filter(|(_, o)| **o == client).map(|(p, _)| p.clone()).collect();
        for path in owned {
            let deleted = self.delete(&path, None);
            debug_assert!(deleted.is_ok(), "an ephemeral znode has no children");
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut bytes = self.snapshot_nodes();
        // The owners follow the nodes only when there are any: older snapshots stay readable.
        if !self.ephemeral.is_empty() {
            bytes.extend(bincode::serialize(&self.ephemeral).unwrap_or_default());
        }
        bytes
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        let mut reader = snapshot;
        let nodes: Vec<(String, Znode)> =
            bincode::deserialize_from(&mut reader).map_err(|e| RestoreError(e.to_string()))?;
        let ephemeral: BTreeMap<String, u64> = if reader.is_empty() {
            BTreeMap::new()
        } else {
            bincode::deserialize(reader).map_err(|e| RestoreError(e.to_string()))?
        };
        let nodes: FastMap<String, Znode> = nodes.into_iter().collect();
        if !nodes.contains_key("/") {
            return Err(RestoreError("the snapshot has no root znode".into()));
        }
        if let Some(path) = ephemeral.keys().find(|p| !nodes.contains_key(*p)) {
            return Err(RestoreError(format!("the snapshot names a missing ephemeral znode {path}")));
        }
        self.nodes = nodes;
        self.ephemeral = ephemeral;
        self.sorted.replace(None);
        Ok(())
    }
}

/// `result`, or [`CoordError::TooLarge`] in its place if it exceeds [`RESULT_BYTES_MAX`].
fn bound_result(result: Vec<u8>) -> Vec<u8> {
    if result.len() <= RESULT_BYTES_MAX {
        return result;
    }
    let refused: CoordResult = Err(CoordError::TooLarge { bytes: result.len(), bound: RESULT_BYTES_MAX });
    bincode::serialize(&refused).unwrap_or_default()
}

impl Coordination {
    fn execute_session(&mut self, client: Option<u64>, op: &[u8]) -> Vec<u8> {
        let result = match bincode::deserialize::<CoordOpRef<'_>>(op) {
            Ok(op) => self.apply_for(client, op),
            Err(e) => {
                Err(CoordError::Malformed(format!("cannot decode coordination operation ({} bytes): {e}", op.len())))
            }
        };
        bound_result(bincode::serialize(&result).unwrap_or_default())
    }

    fn snapshot_nodes(&self) -> Vec<u8> {
        let mut sorted = self.sorted.borrow_mut();
        let paths = sorted.get_or_insert_with(|| {
            let mut paths: Vec<String> = self.nodes.keys().cloned().collect();
            paths.sort_unstable();
            paths
        });
        let nodes: Vec<(&String, &Znode)> = paths.iter().filter_map(|p| self.nodes.get_key_value(p)).collect();
        bincode::serialize(&nodes).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c: &mut Coordination, op: CoordOp) -> CoordResult {
        decode_result(&c.execute(&op.encode())).unwrap()
    }

    fn create(path: &str) -> CoordOp {
        CoordOp::Create { path: path.into(), data: b"d".to_vec(), sequential: false }
    }

    #[test]
    fn create_get_set_delete() {
        let mut c = Coordination::default();
        assert_eq!(run(&mut c, create("/a")), Ok(CoordResponse::Created { path: "/a".into() }));
        assert_eq!(run(&mut c, create("/a/b")), Ok(CoordResponse::Created { path: "/a/b".into() }));
        let data = run(&mut c, CoordOp::GetData { path: "/a".into() });
        assert_eq!(data, Ok(CoordResponse::Data { data: b"d".to_vec(), stat: Stat { version: 0, num_children: 1 } }));
        let set = run(&mut c, CoordOp::SetData { path: "/a/b".into(), data: b"e".to_vec(), version: Some(0) });
        assert_eq!(set, Ok(CoordResponse::Set(Stat { version: 1, num_children: 0 })));
        assert_eq!(
            run(&mut c, CoordOp::GetChildren { path: "/a".into() }),
            Ok(CoordResponse::Children(vec!["b".into()]))
        );
        assert_eq!(run(&mut c, CoordOp::Delete { path: "/a/b".into(), version: Some(1) }), Ok(CoordResponse::Deleted));
        assert_eq!(run(&mut c, CoordOp::Exists { path: "/a/b".into() }), Ok(CoordResponse::Exists(None)));
        assert_eq!(
            run(&mut c, CoordOp::Exists { path: "/a".into() }),
            Ok(CoordResponse::Exists(Some(Stat { version: 0, num_children: 0 })))
        );
    }

    #[test]
    fn sequential_names_are_distinct_and_ordered() {
        let mut c = Coordination::default();
        run(&mut c, create("/locks")).unwrap();
        let op = CoordOp::Create { path: "/locks/l-".into(), data: vec![], sequential: true };
        let first = run(&mut c, op.clone());
        let second = run(&mut c, op);
        assert_eq!(first, Ok(CoordResponse::Created { path: "/locks/l-0000000000".into() }));
        assert_eq!(second, Ok(CoordResponse::Created { path: "/locks/l-0000000001".into() }));
    }

    /// Every error case of the coordination service, with the operation that causes it.
    #[test]
    fn each_error_case() {
        let mut c = Coordination::default();
        run(&mut c, create("/a")).unwrap();
        run(&mut c, create("/a/b")).unwrap();
        let cases: Vec<(CoordOp, CoordError)> = vec![
            (CoordOp::GetData { path: "/x".into() }, CoordError::NoNode("/x".into())),
            (CoordOp::SetData { path: "/x".into(), data: vec![], version: None }, CoordError::NoNode("/x".into())),
            (CoordOp::Delete { path: "/x".into(), version: None }, CoordError::NoNode("/x".into())),
            (CoordOp::GetChildren { path: "/x".into() }, CoordError::NoNode("/x".into())),
            (create("/a"), CoordError::NodeExists("/a".into())),
            (create("/"), CoordError::NodeExists("/".into())),
            (
                CoordOp::SetData { path: "/a".into(), data: vec![], version: Some(7) },
                CoordError::BadVersion { path: "/a".into(), expected: 7, actual: 0 },
            ),
            (
                CoordOp::Delete { path: "/a/b".into(), version: Some(3) },
                CoordError::BadVersion { path: "/a/b".into(), expected: 3, actual: 0 },
            ),
            (CoordOp::Delete { path: "/a".into(), version: None }, CoordError::NotEmpty("/a".into())),
            (create("/q/r"), CoordError::NoParent("/q/r".into())),
        ];
        for (op, expected) in cases {
            assert_eq!(run(&mut c, op.clone()), Err(expected), "{op:?}");
        }
    }

    #[test]
    fn malformed_operations_are_answered_not_executed() {
        let mut c = Coordination::default();
        let before = c.clone();
        for path in ["a", "/a/", "//a", "/a/./b", "/a/../b", "/a\0b"] {
            let result = run(&mut c, create(path));
            assert!(matches!(result, Err(CoordError::Malformed(_))), "{path:?} gave {result:?}");
        }
        let big = CoordOp::Create { path: "/big".into(), data: vec![0; DATA_BYTES_MAX + 1], sequential: false };
        assert!(matches!(run(&mut c, big), Err(CoordError::Malformed(_))));
        let garbage = decode_result(&c.execute(&[9, 9, 9, 9, 9])).unwrap();
        assert!(matches!(garbage, Err(CoordError::Malformed(_))));
        assert!(matches!(
            run(&mut c, CoordOp::Delete { path: "/".into(), version: None }),
            Err(CoordError::Malformed(_))
        ));
        assert_eq!(c, before, "nothing changed");
    }

    /// The borrowed decoding reads exactly what `CoordOp::encode` writes, variant by variant.
    #[test]
    fn borrowed_decoding_matches_the_encoding() {
        let ops = [
            CoordOp::Create { path: "/a".into(), data: vec![1, 2], sequential: true },
            CoordOp::Delete { path: "/a".into(), version: Some(3) },
            CoordOp::SetData { path: "/b".into(), data: vec![9; 100], version: None },
            CoordOp::GetData { path: "/c".into() },
            CoordOp::Exists { path: "/d".into() },
            CoordOp::GetChildren { path: "/e".into() },
        ];
        for op in ops {
            let bytes = op.encode();
            let decoded: CoordOpRef<'_> = bincode::deserialize(&bytes).unwrap();
            assert_eq!(decoded, op.as_ref());
        }
    }

    #[test]
    fn snapshot_round_trip() {
        let mut c = Coordination::default();
        run(&mut c, create("/a")).unwrap();
        let mut d = Coordination::default();
        d.restore(&c.snapshot()).unwrap();
        assert_eq!(c, d);
        // The cached path order follows creates and deletes.
        run(&mut c, create("/b")).unwrap();
        run(&mut c, CoordOp::Delete { path: "/a".into(), version: None }).unwrap();
        d.restore(&c.snapshot()).unwrap();
        assert_eq!(c, d);
        assert_eq!(c.digest(), d.digest());
        assert!(d.restore(&[0xde, 0xad]).is_err());
    }

    #[test]
    fn errors_read_clearly() {
        let e = CoordError::BadVersion { path: "/a".into(), expected: 1, actual: 2 };
        assert_eq!(e.to_string(), "bad version: /a is at version 2, the operation expected 1");
    }

    /// Ephemeral znodes belong to the session that created them, go when it ends, survive
    /// snapshots with their owners, have no children, and need a session.
    #[test]
    fn ephemeral_znodes_end_with_their_session() {
        let mut c = Coordination::default();
        let ephemeral = |path: &str| CoordOp::CreateEphemeral { path: path.into(), data: vec![], sequential: false };
        let in_session = |c: &mut Coordination, client: u64, op: CoordOp| {
            decode_result(&c.execute_for(client, &op.encode())).unwrap()
        };
        assert!(matches!(run(&mut c, ephemeral("/e")), Err(CoordError::Malformed(_))), "no session, no owner");
        in_session(&mut c, 1, create("/locks")).unwrap();
        in_session(&mut c, 1, ephemeral("/locks/a")).unwrap();
        in_session(&mut c, 2, ephemeral("/locks/b")).unwrap();
        assert!(matches!(in_session(&mut c, 2, create("/locks/b/x")), Err(CoordError::Malformed(_))));
        let mut copy = Coordination::default();
        copy.restore(&c.snapshot()).unwrap();
        assert_eq!(copy, c, "owners survive the snapshot");
        for tree in [&mut c, &mut copy] {
            tree.session_expired(1);
            assert!(tree.node("/locks/a").is_err());
            assert!(tree.node("/locks/b").is_ok() && tree.node("/locks").is_ok(), "others' and persistent nodes stay");
        }
        assert_eq!(c.ephemeral().collect::<Vec<_>>(), vec![("/locks/b", 2)]);
        run(&mut c, CoordOp::Delete { path: "/locks/b".into(), version: None }).unwrap();
        assert_eq!(c.ephemeral().count(), 0, "a deleted ephemeral node forgets its owner");
    }

    #[test]
    fn a_result_above_the_bound_is_refused_alike_everywhere() {
        let (mut a, mut b) = (Coordination::default(), Coordination::default());
        for c in [&mut a, &mut b] {
            run(c, CoordOp::Create { path: "/big".into(), data: vec![], sequential: false }).unwrap();
            for i in 0..1100 {
                let path = format!("/big/{i:04}{}", "x".repeat(1000));
                run(c, CoordOp::Create { path, data: vec![], sequential: false }).unwrap();
            }
        }
        let op = CoordOp::GetChildren { path: "/big".into() }.encode();
        let (ra, rb) = (a.execute(&op), b.execute(&op));
        assert_eq!(ra, rb, "every replica produces the same refusal");
        assert!(ra.len() < 100);
        match decode_result(&ra).unwrap() {
            Err(e @ CoordError::TooLarge { bytes, bound }) => {
                assert!(bytes > 1_100_000 && bound == RESULT_BYTES_MAX, "{bytes} {bound}");
                assert!(e.to_string().starts_with("result too large: "), "{e}");
            }
            other => panic!("{other:?}"),
        }
        // Below the bound, the listing is answered.
        run(&mut a, CoordOp::Create { path: "/small".into(), data: vec![], sequential: false }).unwrap();
        assert_eq!(run(&mut a, CoordOp::GetChildren { path: "/small".into() }), Ok(CoordResponse::Children(vec![])));
    }
}
