//! Writing a verified image into the inactive slot.
//!
//! The download goes into a staging file on the data partition, never into the slot: the
//! slot stays byte for byte as it was until the whole image hashed to the signed SHA-256. A
//! tampered, truncated or oversized download (or a data partition too full to stage it) is
//! refused with the slot untouched. Streaming straight into the slot would save the staging
//! space and one copy, but a hash mismatch is only known at the last byte, so some of the
//! slot would already be gone; per-chunk signed hashes would narrow that, not close it.
//!
//! Only the verified staging file is copied into the slot: the old superblock page is zeroed
//! first, the body is copied and fsynced, the first [`HEADER_LEN`] bytes (where erofs,
//! squashfs and ext4 keep their superblock) last; then the slot is read back. A power cut
//! during the copy therefore leaves a slot that does not look like a file system, and nothing
//! is armed. The staging file is removed whatever happens.
//!
//! The staging file is never fsynced: it only has to live until the copy (a power cut
//! discards it anyway), so it mostly stays in the page cache. SHA-256 runs on its own thread,
//! overlapping the download (P8). The read-back is checked with
//! a CRC-32 of the bytes as they arrived: it guards against storage faults (in the staging
//! file or the slot), not an adversary, and a second SHA-256 pass would halve throughput.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::error::UpdateError;

/// Bytes written into the slot last (one file system superblock page).
pub const HEADER_LEN: usize = 4096;
/// Writes are batched to this size: the same as `dd bs=4M`, which the P8 bench compares with.
pub const WRITE_CHUNK: usize = 4 << 20;
/// While copying into the slot, a flusher thread starts writeback every this many bytes, so
/// the disk works while the copy goes on instead of everything waiting for one final fsync.
const FLUSH_EVERY: u64 = 32 << 20;

/// Synchronous writer of one image into one slot through a staging file; see the module docs
/// for the order of writes.
#[derive(Debug)]
pub struct SlotWriter {
    path: PathBuf,
    staging_path: PathBuf,
    target: String,
    staging: File,
    expected_len: u64,
    hash_tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    hasher: std::thread::JoinHandle<[u8; 32]>,
    crc: crc32fast::Hasher,
    pos: u64,
}

impl SlotWriter {
    /// Prepares writing an image of `expected_len` bytes into `slot` (a block device or, in
    /// tests, a pre-sized file) through the file `staging` (created, or truncated if a former
    /// attempt left one). Refuses an image larger than the slot before writing anything.
    pub fn open(
        slot: &Path,
        staging: &Path,
        target: &str,
        expected_len: u64,
    ) -> Result<Self, UpdateError> {
        // Read-only here: the slot is opened for writing only once the image verified.
        let mut probe = File::open(slot).map_err(|e| UpdateError::io(slot, e))?;
        // Seeking to the end gives the size of block devices too (their metadata length is 0).
        let capacity = probe
            .seek(SeekFrom::End(0))
            .map_err(|e| UpdateError::io(slot, e))?;
        if expected_len > capacity {
            return Err(UpdateError::TooLarge {
                target: target.to_owned(),
                size: expected_len,
                limit: capacity,
                what: "inactive slot size",
            });
        }
        if let Some(dir) = staging.parent() {
            std::fs::create_dir_all(dir).map_err(|e| UpdateError::io(dir, e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(staging)
            .map_err(|e| UpdateError::io(staging, e))?;
        let (hash_tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let hasher = std::thread::Builder::new()
            .name("slot-sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                for chunk in rx {
                    h.update(&chunk);
                }
                h.finalize().into()
            })
            .map_err(|e| UpdateError::io(slot, e))?;
        Ok(Self {
            path: slot.to_owned(),
            staging_path: staging.to_owned(),
            target: target.to_owned(),
            staging: file,
            expected_len,
            hash_tx,
            hasher,
            crc: crc32fast::Hasher::new(),
            pos: 0,
        })
    }

    /// Hashes the next bytes of the image and appends them to the staging file.
    pub fn write(&mut self, data: &[u8]) -> Result<(), UpdateError> {
        let end = self.pos + data.len() as u64;
        if end > self.expected_len {
            return Err(UpdateError::Length {
                target: self.target.clone(),
                received: end,
                expected: self.expected_len,
            });
        }
        // The hash thread only stops early if it panicked; finish() reports that.
        let _ = self.hash_tx.send(data.to_vec());
        self.crc.update(data);
        self.staging
            .write_all_at(data, self.pos)
            .map_err(|e| UpdateError::io(&self.staging_path, e))?;
        self.pos = end;
        Ok(())
    }

    /// Checks length and hash of the staged image; only then copies it into the slot (header
    /// last) and reads the slot back. The staging file is removed in every case.
    pub fn finish(self, expected_sha256: &[u8; 32]) -> Result<(), UpdateError> {
        self.verify(expected_sha256)?.install()
    }

    /// Checks length and hash of the staged image (the slot is still untouched); on failure
    /// the staging file is removed.
    pub fn verify(self, expected_sha256: &[u8; 32]) -> Result<Verified, UpdateError> {
        let staging_path = self.staging_path.clone();
        let result = self.verify_staged(expected_sha256);
        if result.is_err() {
            remove_staging(&staging_path);
        }
        result
    }

    fn verify_staged(self, expected_sha256: &[u8; 32]) -> Result<Verified, UpdateError> {
        if self.pos != self.expected_len {
            return Err(UpdateError::Length {
                target: self.target,
                received: self.pos,
                expected: self.expected_len,
            });
        }
        drop(self.hash_tx);
        let actual = self.hasher.join().map_err(|_| {
            UpdateError::io(&self.path, std::io::Error::other("SHA-256 thread panicked"))
        })?;
        if &actual != expected_sha256 {
            return Err(UpdateError::HashMismatch {
                target: self.target,
                expected: hex(expected_sha256),
                actual: hex(&actual),
            });
        }
        Ok(Verified {
            path: self.path,
            staging_path: self.staging_path,
            staging: self.staging,
            expected_len: self.expected_len,
            crc: self.crc.finalize(),
        })
    }
}

/// A staged image whose hash matched: the only thing ever copied into a slot.
#[derive(Debug)]
pub struct Verified {
    path: PathBuf,
    staging_path: PathBuf,
    staging: File,
    expected_len: u64,
    crc: u32,
}

impl Verified {
    /// Copies the image into the slot (header last), reads it back, removes the staging file.
    pub fn install(self) -> Result<(), UpdateError> {
        let result = self.copy_and_check();
        remove_staging(&self.staging_path);
        result
    }

    fn copy_and_check(&self) -> Result<(), UpdateError> {
        let slot = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| UpdateError::io(&self.path, e))?;
        tracing::info!(slot = %self.path.display(), bytes = self.expected_len, "copying the verified image into the slot");
        copy_into_slot(
            &self.staging,
            &self.staging_path,
            &slot,
            &self.path,
            self.expected_len,
        )?;
        let io = |e| UpdateError::io(&self.path, e);
        let read_back = crc_prefix(&slot, self.expected_len).map_err(io)?;
        if read_back != self.crc {
            // Best effort: the slot must not look valid; the error below is what matters.
            let _ = slot.write_all_at(&[0; HEADER_LEN], 0);
            let _ = slot.sync_data();
            return Err(UpdateError::ReadBack {
                path: self.path.clone(),
                expected: format!("{:08x}", self.crc),
                actual: format!("{read_back:08x}"),
            });
        }
        Ok(())
    }
}

fn remove_staging(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "staging file not removed"),
    }
}

/// Copies the verified staging file into the slot: old header zeroed, body, fsync, header,
/// fsync (see the module docs).
fn copy_into_slot(
    staging: &File,
    staging_path: &Path,
    slot: &File,
    slot_path: &Path,
    len: u64,
) -> Result<(), UpdateError> {
    let to_slot = |e| UpdateError::io(slot_path, e);
    let from_staging = |e| UpdateError::io(staging_path, e);
    let header_len = len.min(HEADER_LEN as u64);
    slot.write_all_at(
        &[0; HEADER_LEN][..usize::try_from(header_len).unwrap_or(HEADER_LEN)],
        0,
    )
    .and_then(|()| slot.sync_data())
    .map_err(to_slot)?;
    let (flush_tx, flush_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let to_flush = slot.try_clone().map_err(to_slot)?;
    let flusher = std::thread::Builder::new()
        .name("slot-flush".into())
        .spawn(move || {
            for () in flush_rx {
                to_flush.sync_data()?;
            }
            Ok::<(), std::io::Error>(())
        })
        .map_err(to_slot)?;
    let mut buf = vec![0; WRITE_CHUNK];
    let mut pos = header_len;
    let copied = (|| {
        while pos < len {
            let n = usize::try_from((len - pos).min(WRITE_CHUNK as u64)).unwrap_or(WRITE_CHUNK);
            staging
                .read_exact_at(&mut buf[..n], pos)
                .map_err(from_staging)?;
            slot.write_all_at(&buf[..n], pos).map_err(to_slot)?;
            let before = pos;
            pos += n as u64;
            if before / FLUSH_EVERY != pos / FLUSH_EVERY {
                // Full means a flush is already pending, which covers these bytes too.
                let _ = flush_tx.try_send(());
            }
        }
        Ok(())
    })();
    drop(flush_tx);
    let writeback = flusher
        .join()
        .map_err(|_| to_slot(std::io::Error::other("flush thread panicked")))?;
    copied?;
    writeback.map_err(to_slot)?;
    slot.sync_data().map_err(to_slot)?;
    let header = &mut buf[..usize::try_from(header_len).unwrap_or(HEADER_LEN)];
    staging.read_exact_at(header, 0).map_err(from_staging)?;
    slot.write_all_at(header, 0)
        .and_then(|()| slot.sync_data())
        .map_err(to_slot)
}

/// Streams `stream` into `slot` through a [`SlotWriter`] staging at `staging`, batching writes
/// to [`WRITE_CHUNK`] and doing the blocking I/O off the async runtime.
/// `before_copy` runs once the image verified, before the slot's first byte changes (the
/// updater removes the slot's boot entries there). A failed download removes what it staged.
pub async fn stream_into_slot<S, E>(
    stream: S,
    slot: &Path,
    staging: &Path,
    target: &str,
    expected_len: u64,
    expected_sha256: [u8; 32],
    before_copy: impl FnOnce() -> Result<(), UpdateError>,
) -> Result<(), UpdateError>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::error::Error,
{
    let staged = stage(stream, slot, staging, target, expected_len, expected_sha256).await;
    let verified = match staged {
        Ok(v) => v,
        Err(e) => {
            remove_staging(staging);
            return Err(e);
        }
    };
    if let Err(e) = before_copy() {
        remove_staging(staging);
        return Err(e);
    }
    blocking(move || verified.install()).await
}

async fn stage<S, E>(
    mut stream: S,
    slot: &Path,
    staging: &Path,
    target: &str,
    expected_len: u64,
    expected_sha256: [u8; 32],
) -> Result<Verified, UpdateError>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::error::Error,
{
    let (slot_owned, staging_owned, target_owned) =
        (slot.to_owned(), staging.to_owned(), target.to_owned());
    let mut writer = blocking(move || {
        SlotWriter::open(&slot_owned, &staging_owned, &target_owned, expected_len)
    })
    .await?;
    let mut buf = Vec::with_capacity(WRITE_CHUNK);
    loop {
        let next = stream.next().await;
        let done = match next {
            None => true,
            Some(Ok(chunk)) => {
                buf.extend_from_slice(&chunk);
                false
            }
            Some(Err(e)) => {
                return Err(UpdateError::Download {
                    target: target.to_owned(),
                    reason: crate::error::chain(&e),
                });
            }
        };
        if buf.len() >= WRITE_CHUNK || (done && !buf.is_empty()) {
            let data = std::mem::replace(&mut buf, Vec::with_capacity(WRITE_CHUNK));
            writer = blocking(move || writer.write(&data).map(|()| writer)).await?;
        }
        if done {
            break;
        }
    }
    blocking(move || writer.verify(&expected_sha256)).await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, UpdateError> + Send + 'static,
) -> Result<T, UpdateError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| UpdateError::io("slot writer task", std::io::Error::other(e)))?
}

/// SHA-256 of the first `len` bytes of `file` (fails if the file is shorter).
pub fn hash_prefix(mut file: &File, len: u64) -> std::io::Result<[u8; 32]> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = file.take(len);
    let mut hasher = Sha256::new();
    let mut buf = vec![0; WRITE_CHUNK];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    if total != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("read back {total} of {len} bytes"),
        ));
    }
    Ok(hasher.finalize().into())
}

/// CRC-32 of the first `len` bytes of `file` (fails if the file is shorter).
fn crc_prefix(mut file: &File, len: u64) -> std::io::Result<u32> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = file.take(len);
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0; WRITE_CHUNK];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        crc.update(&buf[..n]);
    }
    if total != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("read back {total} of {len} bytes"),
        ));
    }
    Ok(crc.finalize())
}

/// Lowercase hex, as in TUF metadata.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
