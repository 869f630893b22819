//! Payload files: written under a temporary name, synced, renamed, directory synced —
//! before the row that references them commits.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::QueueError;

const TMP_PREFIX: &str = ".tmp-";
const SUFFIX: &str = ".payload";

/// The directory of large payloads.
#[derive(Debug, Clone)]
pub(crate) struct PayloadDir {
    dir: PathBuf,
}

impl PayloadDir {
    /// Create the directory if needed and make its entry in the parent durable.
    pub(crate) fn create(dir: PathBuf) -> Result<Self, QueueError> {
        fs::create_dir_all(&dir).map_err(QueueError::payload_io("create directory", &dir))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        Ok(Self { dir })
    }

    /// A fresh file name; random so that it is never reused, even after a crash.
    pub(crate) fn new_name() -> String {
        format!("{:032x}{SUFFIX}", fastrand::u128(..))
    }

    /// A name this queue would have generated: a corrupt row must not make the queue read
    /// or delete a file elsewhere (`../../etc/...`).
    pub(crate) fn is_valid_name(name: &str) -> bool {
        name.strip_suffix(SUFFIX)
            .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Write `bytes` durably under `name`: temp file, fsync, rename, fsync directory.
    /// Blocking; run it off the async executor.
    pub(crate) fn write_durable(&self, name: &str, bytes: &[u8]) -> Result<(), QueueError> {
        let tmp = self.dir.join(format!("{TMP_PREFIX}{name}"));
        let mut file = File::create_new(&tmp).map_err(QueueError::payload_io("create", &tmp))?;
        file.write_all(bytes)
            .map_err(QueueError::payload_io("write", &tmp))?;
        file.sync_all()
            .map_err(QueueError::payload_io("fsync", &tmp))?;
        drop(file);
        let path = self.path(name);
        fs::rename(&tmp, &path).map_err(QueueError::payload_io("rename", &path))?;
        sync_dir(&self.dir)
    }

    /// Read a payload file, refusing one whose size differs from `expected_len` before
    /// reading it (a corrupt length must not make us allocate gigabytes). Blocking.
    pub(crate) fn read(&self, name: &str, expected_len: u64) -> Result<Vec<u8>, String> {
        let path = self.path(name);
        let len = fs::metadata(&path)
            .map_err(|e| format!("payload file {name}: {e}"))?
            .len();
        if len != expected_len {
            return Err(format!(
                "payload file {name} has {len} bytes, row says {expected_len}"
            ));
        }
        fs::read(&path).map_err(|e| format!("payload file {name}: {e}"))
    }

    /// Remove a payload file whose row no longer references it. Not synced: if the removal
    /// is lost in a crash the file is an orphan, swept at the next open.
    pub(crate) fn remove(&self, name: &str) -> Result<(), QueueError> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(QueueError::payload_io("remove", path)(e))
            }
            _ => Ok(()),
        }
    }

    /// Remove every file not in `referenced`: temp files of writes that never finished and
    /// payloads whose row never committed (crash between rename and commit). Returns the
    /// number removed. Blocking.
    pub(crate) fn sweep_orphans(&self, referenced: &HashSet<String>) -> Result<usize, QueueError> {
        let mut removed = 0;
        let entries = fs::read_dir(&self.dir).map_err(QueueError::payload_io("list", &self.dir))?;
        for entry in entries {
            let entry = entry.map_err(QueueError::payload_io("list", &self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let ours = name.starts_with(TMP_PREFIX) || Self::is_valid_name(name);
            if ours && !referenced.contains(name) {
                self.remove(name)?;
                removed += 1;
            }
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(QueueError::payload_io("fsync directory", dir))
}
