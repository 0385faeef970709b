//! One durable number in a file, replaced atomically: a proposer's highest led view, a
//! controller's view, a request source's count of starts.
//!
//! The file holds one line, `<number or none> <checksum>`, so that a flipped bit is detected
//! instead of read as another number.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::disk::Disk;
use super::error::{Problem, StorageError};

/// An optional `u64` kept in `dir/name`.
#[derive(Clone)]
pub struct DurableValue {
    disk: Arc<dyn Disk>,
    path: PathBuf,
}

impl std::fmt::Debug for DurableValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableValue").field("path", &self.path).finish()
    }
}

fn check(text: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(text.as_bytes(), 0x7661_6c75)
}

fn encode(value: Option<u64>) -> String {
    let text = value.map_or_else(|| "none".to_string(), |v| v.to_string());
    format!("{text} {:016x}\n", check(&text))
}

fn decode(text: &str) -> Result<Option<u64>, String> {
    let (value, checksum) = text.trim_end().split_once(' ').ok_or("not `<value> <checksum>`")?;
    if u64::from_str_radix(checksum, 16).ok() != Some(check(value)) {
        return Err(format!("the checksum does not match the value {value:?}"));
    }
    if value == "none" {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|e| format!("{value:?} is not a number: {e}"))
}

impl DurableValue {
    /// The value stored as `name` in `dir`.
    pub fn new(disk: Arc<dyn Disk>, dir: &Path, name: &str) -> DurableValue {
        DurableValue { disk, path: dir.join(name) }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored value (`Some(None)`: the file says none yet); `None` if there is no file.
    pub fn read(&self) -> Result<Option<Option<u64>>, StorageError> {
        let bytes = self.disk.read(&self.path).map_err(|e| StorageError::io(&self.path, Problem::Unreadable, &e))?;
        let Some(bytes) = bytes else { return Ok(None) };
        let text = String::from_utf8(bytes).map_err(|_| StorageError::new(&self.path, Problem::Damaged, "not text"))?;
        decode(&text).map(Some).map_err(|e| StorageError::new(&self.path, Problem::Damaged, e))
    }

    /// Stores `value` durably.
    pub fn write(&self, value: Option<u64>) -> Result<(), StorageError> {
        let bytes = encode(value);
        self.disk
            .replace(&self.path, bytes.as_bytes())
            .map_err(|e| StorageError::io(&self.path, Problem::WriteFailed, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemDisk;

    #[test]
    fn round_trip_absence_and_damage() {
        let memory = MemDisk::new();
        memory.create_dir(Path::new("/p")).unwrap();
        let value = DurableValue::new(Arc::new(memory.clone()), Path::new("/p"), "led-view");
        assert_eq!(value.read().unwrap(), None);
        value.write(None).unwrap();
        assert_eq!(value.read().unwrap(), Some(None));
        value.write(Some(7)).unwrap();
        value.write(Some(9)).unwrap();
        assert_eq!(value.read().unwrap(), Some(Some(9)));
        // A flipped bit turns 9 into 1 (0x39 -> 0x31): the checksum catches it.
        memory.flip_bit(value.path(), 0, 3);
        assert_eq!(value.read().unwrap_err().problem, Problem::Damaged);
        memory.replace(value.path(), b"garbage").unwrap();
        assert_eq!(value.read().unwrap_err().problem, Problem::Damaged);
    }
}
