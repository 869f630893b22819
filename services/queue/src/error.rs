use std::path::PathBuf;

use crate::ItemId;

/// Everything that can go wrong in the queue. [`QueueError::is_retryable`] tells a caller
/// whether trying the same call again later can help.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The database refused or failed an operation (I/O error, disk full, busy, ...).
    #[error("queue storage failed during {op}")]
    Storage {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The embedded schema migrations could not be applied.
    #[error("queue schema migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// Writing, syncing, reading or removing a payload file (or its directory) failed.
    #[error("payload file {op} failed for {path}")]
    PayloadIo {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The lease behind an ack/retry/fail is no longer held: it expired and the item was
    /// leased again, or the item was settled. The call was not applied.
    #[error("lease on item {id} is no longer held (expired and re-leased, or already settled)")]
    LeaseLost { id: ItemId },
    /// The caller passed something the queue will not store.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        field: &'static str,
        reason: &'static str,
    },
    /// The payload is larger than `QueueConfig::max_payload`.
    #[error("payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge { len: u64, max: u64 },
}

impl QueueError {
    pub(crate) fn storage(op: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Storage { op, source }
    }

    pub(crate) fn payload_io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::PayloadIo { op, path, source }
    }

    /// Whether the same call may succeed later (storage and file errors are usually
    /// transient: disk full, busy, I/O hiccup); the others will fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Storage { .. } | Self::PayloadIo { .. } => true,
            Self::Migrate(_)
            | Self::LeaseLost { .. }
            | Self::InvalidInput { .. }
            | Self::PayloadTooLarge { .. } => false,
        }
    }
}
