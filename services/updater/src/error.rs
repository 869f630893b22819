//! The updater's one error type: every variant says which file, URL or slot, and why.

use std::path::PathBuf;

/// Why an update step failed. Every rejection of the device side happens before the slot
/// header is written and before anything is armed (see [`crate::slot`]).
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// TUF verification of the vendor metadata failed (expired, rolled back, mixed releases,
    /// too large, untrusted signature, root rotation not signed by the old and new keys…).
    #[error("update metadata from {url} rejected: {reason}")]
    Metadata { url: String, reason: String },
    /// The trusted root shipped in the image cannot be read.
    #[error("trusted root {path}: {reason}")]
    TrustedRoot { path: PathBuf, reason: String },
    /// A target's signed custom fields (board, version) are missing or malformed.
    #[error("target {target}: {reason}")]
    Target { target: String, reason: String },
    /// The image does not fit in the inactive slot or exceeds the configured maximum.
    #[error("target {target} is {size} bytes, the limit is {limit} bytes ({what})")]
    TooLarge {
        target: String,
        size: u64,
        limit: u64,
        what: &'static str,
    },
    /// The downloaded bytes do not hash to the signed SHA-256.
    #[error("target {target}: SHA-256 {actual} differs from the signed {expected}")]
    HashMismatch {
        target: String,
        expected: String,
        actual: String,
    },
    /// The download ended early or delivered more than the signed length.
    #[error("target {target}: received {received} bytes, the signed length is {expected}")]
    Length {
        target: String,
        received: u64,
        expected: u64,
    },
    /// The download stream failed (transport or tough's own hash/size check).
    #[error("target {target}: download failed: {reason}")]
    Download { target: String, reason: String },
    /// What was read back from the slot differs from what was verified while writing.
    #[error("slot {path}: read-back CRC-32 {actual} differs from the written {expected}")]
    ReadBack {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// A file or device could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Vendor-side key handling or TUF signing failed.
    #[error("vendor {step}: {reason}")]
    Vendor { step: &'static str, reason: String },
    /// The boot entries on the ESP are not in a state we can act on.
    #[error("boot entries in {path}: {reason}")]
    Boot { path: PathBuf, reason: String },
}

impl UpdateError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn vendor(step: &'static str, e: impl std::error::Error) -> Self {
        Self::Vendor {
            step,
            reason: chain(&e),
        }
    }
}

/// An error and all its sources on one line: tough's top-level messages alone ("failed to load
/// timestamp") hide the reason an operator needs ("expired", "version 3 < 4").
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let m = src.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = src.source();
    }
    s
}
