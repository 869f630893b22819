//! Writing a verified image into the inactive slot.
//!
//! The first [`HEADER_LEN`] bytes (where squashfs/erofs/ext4 keep their superblock) are held in
//! memory and written only after the whole image hashed to the signed SHA-256 and the body was
//! fsynced; then everything is read back and hashed again. A failed or truncated download
//! therefore never leaves a slot that looks like a valid file system, and nothing is armed.
//!
//! SHA-256 runs on its own thread, overlapping the writes (P8: hashing at ~1 GB/s is as slow
//! as the disk). The read-back is checked with a CRC-32 of the same verified bytes: it guards
//! against storage faults, not an adversary, and a second SHA-256 pass would halve throughput.
//! The inactive slot is never the fallback (the running slot is), so its body may be scribbled
//! on by a failed attempt without risk.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::error::UpdateError;

/// Bytes withheld until the image is verified (one file system superblock page).
pub const HEADER_LEN: usize = 4096;
/// Writes are batched to this size: the same as `dd bs=4M`, which the P8 bench compares with.
pub const WRITE_CHUNK: usize = 4 << 20;
/// A flusher thread starts writeback every this many bytes, so the disk works while SHA-256
/// runs instead of everything waiting for one final fsync.
const FLUSH_EVERY: u64 = 32 << 20;

/// Synchronous writer of one image into one slot; see the module docs for the order of writes.
#[derive(Debug)]
pub struct SlotWriter {
    path: PathBuf,
    target: String,
    file: File,
    expected_len: u64,
    hash_tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    hasher: std::thread::JoinHandle<[u8; 32]>,
    flush_tx: std::sync::mpsc::SyncSender<()>,
    flusher: std::thread::JoinHandle<std::io::Result<()>>,
    crc: crc32fast::Hasher,
    header: Vec<u8>,
    pos: u64,
}

impl SlotWriter {
    /// Opens `slot` (a block device or, in tests, a pre-sized file) for an image of
    /// `expected_len` bytes; refuses an image larger than the slot before writing anything.
    pub fn open(slot: &Path, target: &str, expected_len: u64) -> Result<Self, UpdateError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(slot)
            .map_err(|e| UpdateError::io(slot, e))?;
        // Seeking to the end gives the size of block devices too (their metadata length is 0).
        let capacity = file
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
        let (flush_tx, flush_rx) = std::sync::mpsc::sync_channel::<()>(1);
        let to_flush = file.try_clone().map_err(|e| UpdateError::io(slot, e))?;
        let flusher = std::thread::Builder::new()
            .name("slot-flush".into())
            .spawn(move || {
                for () in flush_rx {
                    to_flush.sync_data()?;
                }
                Ok(())
            })
            .map_err(|e| UpdateError::io(slot, e))?;
        Ok(Self {
            path: slot.to_owned(),
            target: target.to_owned(),
            file,
            expected_len,
            hash_tx,
            hasher,
            flush_tx,
            flusher,
            crc: crc32fast::Hasher::new(),
            header: Vec::with_capacity(HEADER_LEN),
            pos: 0,
        })
    }

    /// Hashes and writes the next bytes of the image (the header part is only kept).
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), UpdateError> {
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
        if self.header.len() < HEADER_LEN {
            let take = (HEADER_LEN - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            self.pos += take as u64;
        }
        if !data.is_empty() {
            self.file
                .write_all_at(data, self.pos)
                .map_err(|e| UpdateError::io(&self.path, e))?;
            let before = self.pos;
            self.pos += data.len() as u64;
            if before / FLUSH_EVERY != self.pos / FLUSH_EVERY {
                // Full means a flush is already pending, which covers these bytes too.
                let _ = self.flush_tx.try_send(());
            }
        }
        Ok(())
    }

    /// Checks length and hash, fsyncs the body, writes and fsyncs the header, then reads the
    /// image back and checks the hash again. Any failure leaves the header unwritten (or zeroed
    /// if the read-back fails).
    pub fn finish(self, expected_sha256: &[u8; 32]) -> Result<(), UpdateError> {
        if self.pos != self.expected_len {
            return Err(UpdateError::Length {
                target: self.target,
                received: self.pos,
                expected: self.expected_len,
            });
        }
        drop(self.hash_tx);
        drop(self.flush_tx);
        let flushed = self.flusher.join().map_err(|_| {
            UpdateError::io(&self.path, std::io::Error::other("flush thread panicked"))
        })?;
        flushed.map_err(|e| UpdateError::io(&self.path, e))?;
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
        let io = |e| UpdateError::io(&self.path, e);
        self.file.sync_data().map_err(io)?;
        self.file.write_all_at(&self.header, 0).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        let written = self.crc.finalize();
        let read_back = crc_prefix(&self.file, self.expected_len).map_err(io)?;
        if read_back != written {
            // Best effort: the slot must not look valid; the error below is what matters.
            let _ = self.file.write_all_at(&vec![0; self.header.len()], 0);
            let _ = self.file.sync_data();
            return Err(UpdateError::ReadBack {
                path: self.path,
                expected: format!("{written:08x}"),
                actual: format!("{read_back:08x}"),
            });
        }
        Ok(())
    }
}

/// Streams `stream` into `slot` through a [`SlotWriter`], batching writes to [`WRITE_CHUNK`]
/// and doing the blocking I/O off the async runtime.
pub async fn stream_into_slot<S, E>(
    mut stream: S,
    slot: &Path,
    target: &str,
    expected_len: u64,
    expected_sha256: [u8; 32],
) -> Result<(), UpdateError>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::error::Error,
{
    let (slot_owned, target_owned) = (slot.to_owned(), target.to_owned());
    let mut writer =
        blocking(move || SlotWriter::open(&slot_owned, &target_owned, expected_len)).await?;
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
    blocking(move || writer.finish(&expected_sha256)).await
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
