//! One durable number in a file, replaced atomically (a proposer's highest led view).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A `u64` kept in `dir/name`, written through a synced temporary file and a rename.
#[derive(Clone, Debug)]
pub struct DurableValue {
    path: PathBuf,
}

impl DurableValue {
    /// The value stored as `name` in `dir` (created if needed).
    pub fn open(dir: &Path, name: &str) -> io::Result<DurableValue> {
        fs::create_dir_all(dir)?;
        Ok(DurableValue { path: dir.join(name) })
    }

    /// The stored value; `None` if there is none yet. A damaged file is an error.
    pub fn read(&self) -> io::Result<Option<u64>> {
        match fs::read_to_string(&self.path) {
            Ok(text) => text.trim().parse().map(Some).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{} is damaged: {e}", self.path.display()))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores `value` durably.
    pub fn write(&self, value: u64) -> io::Result<()> {
        let temporary = self.path.with_extension("tmp");
        let mut file = File::create(&temporary)?;
        file.write_all(value.to_string().as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_absence() {
        let dir = tempfile::tempdir().unwrap();
        let value = DurableValue::open(dir.path(), "led-view").unwrap();
        assert_eq!(value.read().unwrap(), None);
        value.write(7).unwrap();
        value.write(9).unwrap();
        assert_eq!(value.read().unwrap(), Some(9));
        fs::write(dir.path().join("led-view"), "garbage").unwrap();
        assert!(value.read().is_err());
    }
}
