//! The storage seam. [`crate::Queue`] owns the policy (backoff, lifetime, payload files,
//! checksums, quarantine decisions); a [`Store`] only persists rows, each method being one
//! atomic, durable step. A PostgreSQL store for OCT scale implements this trait and no
//! caller changes; tests wrap a store to inject failures.
//!
//! Native `async fn` in traits is used through `-> impl Future + Send` so that the queue
//! stays generic (`Queue<S: Store>`, no boxing, no `async-trait` crate) and its futures
//! remain `Send` for multi-threaded runtimes.

use std::future::Future;

use crate::{ItemId, ItemInfo, ListFilter, QuarantineEntry, QueueError, QueueMetrics};

/// Where a new item's payload lives.
#[derive(Debug, Clone, Copy)]
pub enum PayloadRef<'a> {
    /// Stored in the row.
    Inline(&'a [u8]),
    /// Stored in a file of that name (already durable) in the payload directory.
    File(&'a str),
}

/// A row to insert, in state `queued`.
#[derive(Debug, Clone, Copy)]
pub struct NewRow<'a> {
    pub kind: &'a str,
    pub idempotency_key: &'a str,
    pub payload: PayloadRef<'a>,
    pub payload_len: i64,
    pub payload_sha256: &'a [u8; 32],
    pub created_at_ms: i64,
    pub next_attempt_at_ms: i64,
}

/// Result of an insert: the id of the row holding that idempotency key, and whether this
/// call created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertOutcome {
    pub id: ItemId,
    pub inserted: bool,
}

/// A row just leased, as stored; the queue checks it before handing it out.
#[derive(Debug, Clone)]
pub struct LeasedRow {
    pub id: ItemId,
    pub kind: String,
    pub idempotency_key: String,
    pub attempts: u32,
    pub lease_gen: i64,
    pub created_at_ms: i64,
    pub payload_inline: Option<Vec<u8>>,
    pub payload_file: Option<String>,
    pub payload_len: i64,
    pub payload_sha256: Vec<u8>,
}

/// A leased row whose columns could not be decoded: it must be quarantined.
#[derive(Debug, Clone)]
pub struct UndecodableRow {
    pub id: ItemId,
    pub reason: String,
}

/// Durable row storage for the queue. Every method is atomic; a method that returns `Ok`
/// has made its change durable (committed with a synced log). The `bool` returned by the
/// lease-checked updates is `false` when no row matched `(id, state = leased, lease_gen)`.
pub trait Store: Send + Sync + 'static {
    /// Insert a `queued` row unless `(kind, idempotency_key)` exists; either way return
    /// the id holding the key.
    fn insert(
        &self,
        row: NewRow<'_>,
    ) -> impl Future<Output = Result<InsertOutcome, QueueError>> + Send;

    /// The id holding `(kind, idempotency_key)`, if any.
    fn find_key(
        &self,
        kind: &str,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<Option<ItemId>, QueueError>> + Send;

    /// Lease up to `max` rows of `kind` that are due at `now_ms` (queued, failed, or leased
    /// with an expired lease): state `leased`, `attempts + 1`, `lease_gen + 1`,
    /// `next_attempt_at = until_ms`.
    fn lease(
        &self,
        kind: &str,
        now_ms: i64,
        until_ms: i64,
        max: u32,
    ) -> impl Future<Output = Result<Vec<Result<LeasedRow, UndecodableRow>>, QueueError>> + Send;

    /// Leased → done, dropping the inline payload and the payload file reference.
    fn complete(
        &self,
        id: ItemId,
        lease_gen: i64,
        now_ms: i64,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Leased → failed, due again at `next_attempt_at_ms`.
    fn reschedule(
        &self,
        id: ItemId,
        lease_gen: i64,
        next_attempt_at_ms: i64,
        reason: &str,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Leased → dead, keeping the payload for inspection.
    fn bury(
        &self,
        id: ItemId,
        lease_gen: i64,
        now_ms: i64,
        reason: &str,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Move a row to the quarantine table with `reason`, in one transaction. `false` if the
    /// row no longer exists.
    fn quarantine(
        &self,
        id: ItemId,
        reason: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Rows whose columns fail validation (types, state, checksum shape, payload location).
    fn find_invalid(&self) -> impl Future<Output = Result<Vec<UndecodableRow>, QueueError>> + Send;

    /// Payload file names referenced by items or quarantined rows.
    fn referenced_payload_files(
        &self,
    ) -> impl Future<Output = Result<Vec<String>, QueueError>> + Send;

    /// Earliest `next_attempt_at` among live items of `kind` (queued, failed, leased).
    fn next_due(&self, kind: &str) -> impl Future<Output = Result<Option<i64>, QueueError>> + Send;

    fn metrics(&self, now_ms: i64)
    -> impl Future<Output = Result<QueueMetrics, QueueError>> + Send;

    fn get(&self, id: ItemId) -> impl Future<Output = Result<Option<ItemInfo>, QueueError>> + Send;

    fn list(
        &self,
        filter: &ListFilter,
    ) -> impl Future<Output = Result<Vec<ItemInfo>, QueueError>> + Send;

    fn quarantined(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<QuarantineEntry>, QueueError>> + Send;

    /// Delete done rows settled before `before_ms`; the number deleted.
    fn prune_done(&self, before_ms: i64) -> impl Future<Output = Result<u64, QueueError>> + Send;
}
