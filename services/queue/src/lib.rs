//! The durable queue every passerelle flow uses as its outbox or inbox.
//!
//! # Durability contract
//!
//! **Invariant: an item is acknowledged to its producer only after it is durable.**
//! [`Queue::enqueue`] returns `Ok` only once the item's row — and its payload file, if it
//! has one — would survive a power cut at the next instant.
//!
//! ## Record format
//!
//! One SQLite database, `<dir>/queue.db`, in WAL mode with `synchronous=FULL` (every commit
//! fsyncs the WAL before returning), schema from the embedded migrations. One row per item
//! in `items`:
//!
//! | column | meaning |
//! |---|---|
//! | `id` | row id, unique among stored rows |
//! | `kind`, `idempotency_key` | the item's identity, `UNIQUE` together (Message-ID, lot id…) |
//! | `state` | `queued` → `leased` → `done`, or `leased` → `failed` → `leased` …, or → `dead` |
//! | `attempts` | number of times the item was leased |
//! | `lease_gen` | incremented at every lease; the token an ack must present |
//! | `created_at`, `next_attempt_at`, `settled_at` | Unix ms; while leased, `next_attempt_at` is the lease expiry |
//! | `payload` or `payload_file` | the payload inline (≤ `inline_payload_max`) or the name of a file in `<dir>/payloads/` |
//! | `payload_len`, `payload_sha256` | length and SHA-256 of the payload, checked at every lease |
//! | `last_error` | the reason of the last retry or of death |
//!
//! ## What is synced when
//!
//! * **enqueue, inline payload**: one `INSERT … ON CONFLICT DO NOTHING` in autocommit: one
//!   WAL fsync. Then `Ok`.
//! * **enqueue, file payload**: the file is written as `payloads/.tmp-<name>`, fsynced,
//!   renamed to `payloads/<name>`, the directory fsynced; *then* the row commits (WAL
//!   fsync). Then `Ok`. The file name is random, never derived from the key.
//! * **lease**: one `UPDATE … RETURNING` commit (batched, up to `max` items).
//! * **ack**: one `UPDATE` commit (state `done`, payload column and file reference
//!   cleared); only after it commits is the payload file unlinked (not synced).
//! * **retry / fail_permanent**: one `UPDATE` commit each. Dead items keep their payload.
//! * **open**: migrations; the database and payload directories are fsynced; rows failing
//!   validation are quarantined; orphan payload files are removed.
//!
//! ## What a crash at each point can and cannot do
//!
//! * Before the enqueue's commit: the item is absent and `enqueue` never returned `Ok`, so
//!   the producer never acknowledged it upstream and will offer it again. A payload file
//!   already renamed in place is an orphan, removed at the next open.
//! * After the commit, before the producer acknowledges its own client: the item is stored;
//!   the client retries, the producer enqueues again with the same idempotency key and gets
//!   `duplicate: true`. **This is the only duplicate enqueue possible**, and the key absorbs
//!   it.
//! * While leased: nothing is lost; the item becomes due again when its lease expires
//!   (`next_attempt_at`) and is leased by the next consumer.
//! * After the consumer's side effect, before its ack commits: the item is delivered again
//!   after lease expiry. Consumers must make side effects idempotent (by the key) or accept
//!   this at-least-once delivery; it cannot be removed without a two-phase protocol with
//!   the peer.
//! * After the ack's commit, before the payload file is unlinked: the file is an orphan,
//!   removed at the next open.
//! * A crash cannot lose a committed row, resurrect a done item, or make an ack with a stale
//!   lease apply: acks, retries and failures are conditional on `(state = leased,
//!   lease_gen)`, so a consumer whose lease expired and was taken over gets
//!   [`QueueError::LeaseLost`] instead of silently overriding the new holder.
//! * Times are wall-clock milliseconds: a clock stepped forward expires leases early (more
//!   at-least-once redeliveries, still refused stale acks), one stepped back delays them.
//!   Neither loses an item.
//!
//! ## Deletion follows acknowledgement
//!
//! Payloads are deleted only after the ack commits. Done rows stay, without payload, for
//! `done_retention` so that their idempotency keys keep absorbing late duplicates; then
//! [`Queue::prune_done`] deletes them. An item re-enqueued after its row was pruned is a new
//! item. Dead rows are kept for the operator.
//!
//! ## Corruption
//!
//! A row whose columns do not validate (at open, or when leased), or whose payload is
//! missing or fails its length or SHA-256 check (when leased), is moved to the
//! `quarantine` table with the reason, logged with `tracing::error!` and counted in
//! [`QueueMetrics::quarantined`]. Other items keep flowing; nothing panics. A quarantined
//! item's key is free again, so a producer offering it anew re-creates it.
//!
//! ## Storage seam
//!
//! The queue's policy sits on a [`Store`] trait (one atomic durable step per method); the
//! SQLite store is [`SqliteStore`]. A PostgreSQL store can be added without touching
//! callers, and tests wrap a store to inject failures. One `Queue` per directory: the
//! orphan sweep at open assumes no other process writes payloads there.

mod config;
mod error;
mod payload;
mod sqlite;
pub mod store;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use passerelle_backoff::Backoff;
use sha2::{Digest, Sha256};

pub use config::QueueConfig;
pub use error::QueueError;
pub use sqlite::SqliteStore;
pub use store::Store;

use payload::PayloadDir;
use store::{LeasedRow, NewRow, PayloadRef};

/// Longest accepted `kind`.
pub const MAX_KIND_LEN: usize = 64;
/// Longest accepted idempotency key (an RFC 5322 line, for Message-IDs, fits).
pub const MAX_KEY_LEN: usize = 1000;
/// Reasons stored in `last_error` are cut to this many bytes.
pub const MAX_REASON_LEN: usize = 1000;

/// A stored item's row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemId(pub i64);

impl std::fmt::Display for ItemId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where an item is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemState {
    Queued,
    Leased,
    Done,
    Failed,
    Dead,
}

impl ItemState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Leased => "leased",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }
}

/// A state name that is not one of [`ItemState`]'s.
#[derive(Debug, thiserror::Error)]
#[error("unknown item state {0:?}")]
pub struct UnknownState(String);

impl std::str::FromStr for ItemState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => Self::Queued,
            "leased" => Self::Leased,
            "done" => Self::Done,
            "failed" => Self::Failed,
            "dead" => Self::Dead,
            other => return Err(UnknownState(other.to_owned())),
        })
    }
}

/// An item offered to the queue.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub kind: String,
    pub idempotency_key: String,
    pub payload: Vec<u8>,
    /// Not to be leased before this time (`None`: at once).
    pub not_before: Option<SystemTime>,
}

impl NewItem {
    pub fn new(
        kind: impl Into<String>,
        idempotency_key: impl Into<String>,
        payload: impl Into<Vec<u8>>,
    ) -> Self {
        Self {
            kind: kind.into(),
            idempotency_key: idempotency_key.into(),
            payload: payload.into(),
            not_before: None,
        }
    }
}

/// What [`Queue::enqueue`] did: `duplicate` when the key was already stored (nothing
/// changed; `id` is the existing item's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnqueueOutcome {
    pub id: ItemId,
    pub duplicate: bool,
}

/// An item leased to a consumer until [`Leased::lease_expires_at`]. Settle it with
/// [`Queue::ack`], [`Queue::retry`] or [`Queue::fail_permanent`].
#[derive(Debug, Clone)]
pub struct Leased {
    id: ItemId,
    kind: String,
    idempotency_key: String,
    attempt: u32,
    lease_gen: i64,
    created_at: SystemTime,
    lease_expires_at: SystemTime,
    payload: Vec<u8>,
    payload_file: Option<String>,
}

impl Leased {
    pub fn id(&self) -> ItemId {
        self.id
    }
    pub fn kind(&self) -> &str {
        &self.kind
    }
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }
    /// 1 for the first delivery, incremented at every lease (crashed deliveries count).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }
    pub fn lease_expires_at(&self) -> SystemTime {
        self.lease_expires_at
    }
    /// The payload, checked against its stored length and SHA-256.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// Why a delivery failed temporarily, and what the peer asked for.
#[derive(Debug, Clone, Default)]
pub struct RetryHint {
    /// The peer's `Retry-After`, if it gave one; replaces the backoff (clamped).
    pub retry_after: Option<Duration>,
    pub reason: String,
}

/// What [`Queue::retry`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    /// The item is due again at this time.
    Scheduled { next_attempt_at: SystemTime },
    /// The item's lifetime is over: it is dead (the caller sends the DSN).
    Dead,
}

/// An item as shown to operators (no payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemInfo {
    pub id: ItemId,
    pub kind: String,
    pub idempotency_key: String,
    pub state: ItemState,
    pub attempts: u32,
    pub created_at: SystemTime,
    /// While leased: the lease expiry.
    pub next_attempt_at: SystemTime,
    /// When it became done or dead.
    pub settled_at: Option<SystemTime>,
    pub last_error: Option<String>,
    pub payload_len: u64,
}

/// Which items [`Queue::list`] returns: ordered by id, after `after`, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    pub kind: Option<String>,
    pub state: Option<ItemState>,
    pub after: Option<ItemId>,
    pub limit: u32,
}

impl Default for ListFilter {
    fn default() -> Self {
        Self {
            kind: None,
            state: None,
            after: None,
            limit: 100,
        }
    }
}

/// A row moved aside because it failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry {
    pub quarantine_id: i64,
    /// The corrupt row's values, where they still decode.
    pub item_id: Option<ItemId>,
    pub kind: Option<String>,
    pub idempotency_key: Option<String>,
    pub reason: String,
    pub quarantined_at: SystemTime,
}

/// Per-kind gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindMetrics {
    pub kind: String,
    /// Items not yet settled (queued, leased, failed).
    pub depth: u64,
    /// Of which leased right now.
    pub leased: u64,
    /// Age of the oldest unsettled item (zero when none).
    pub oldest_age: Duration,
    pub dead: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMetrics {
    /// Sorted by kind; kinds with neither live nor dead items are absent.
    pub kinds: Vec<KindMetrics>,
    /// Rows ever moved to quarantine (and still there).
    pub quarantined: u64,
}

/// A durable queue over a [`Store`].
#[derive(Debug, Clone)]
pub struct Queue<S: Store> {
    store: S,
    payloads: PayloadDir,
    config: QueueConfig,
    backoff: Backoff,
}

impl Queue<SqliteStore> {
    /// Open (or create) the queue in `dir`: `dir/queue.db` and `dir/payloads/`.
    pub async fn open_sqlite(
        dir: impl AsRef<Path>,
        config: QueueConfig,
    ) -> Result<Self, QueueError> {
        let dir = dir.as_ref().to_path_buf();
        let created = dir.clone();
        blocking(move || {
            std::fs::create_dir_all(&created)
                .map_err(QueueError::payload_io("create directory", &created))
        })
        .await?;
        let store = SqliteStore::open(&dir.join("queue.db"), config.busy_timeout).await?;
        // The database and WAL files' directory entries must be durable too.
        let synced = dir.clone();
        blocking(move || payload::sync_dir(&synced)).await?;
        Self::with_store(store, dir.join("payloads"), config).await
    }
}

impl<S: Store> Queue<S> {
    /// A queue over `store` with large payloads in `payload_dir`. Runs recovery: invalid
    /// rows are quarantined and orphan payload files removed.
    pub async fn with_store(
        store: S,
        payload_dir: impl Into<PathBuf>,
        config: QueueConfig,
    ) -> Result<Self, QueueError> {
        let dir = payload_dir.into();
        let payloads = blocking(move || PayloadDir::create(dir)).await?;
        let queue = Self {
            store,
            payloads,
            backoff: config.backoff(),
            config,
        };
        queue.recover().await?;
        Ok(queue)
    }

    async fn recover(&self) -> Result<(), QueueError> {
        for bad in self.store.find_invalid().await? {
            self.quarantine(bad.id, None, &bad.reason).await?;
        }
        let referenced: HashSet<String> = self
            .store
            .referenced_payload_files()
            .await?
            .into_iter()
            .collect();
        let payloads = self.payloads.clone();
        let removed = blocking(move || payloads.sweep_orphans(&referenced)).await?;
        if removed > 0 {
            tracing::info!(removed, "removed orphan payload files left by a crash");
        }
        Ok(())
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Store `item` durably; returns only once it would survive a crash. Offering a key that
    /// is already stored (in any state until pruned) changes nothing: `duplicate: true`.
    pub async fn enqueue(&self, item: NewItem) -> Result<EnqueueOutcome, QueueError> {
        validate_name("kind", &item.kind, MAX_KIND_LEN)?;
        validate_name("idempotency_key", &item.idempotency_key, MAX_KEY_LEN)?;
        let len = item.payload.len() as u64;
        if len > self.config.max_payload {
            return Err(QueueError::PayloadTooLarge {
                len,
                max: self.config.max_payload,
            });
        }
        let now = now_ms();
        let due = item.not_before.map_or(now, time_to_ms).max(now);
        let payload_len = i64::try_from(len).unwrap_or(i64::MAX);

        let outcome = if len <= self.config.inline_payload_max {
            let sha: [u8; 32] = Sha256::digest(&item.payload).into();
            self.store
                .insert(NewRow {
                    kind: &item.kind,
                    idempotency_key: &item.idempotency_key,
                    payload: PayloadRef::Inline(&item.payload),
                    payload_len,
                    payload_sha256: &sha,
                    created_at_ms: now,
                    next_attempt_at_ms: due,
                })
                .await?
        } else {
            // Check first so a duplicate of a large item costs no file write.
            if let Some(id) = self
                .store
                .find_key(&item.kind, &item.idempotency_key)
                .await?
            {
                return Ok(EnqueueOutcome {
                    id,
                    duplicate: true,
                });
            }
            let name = PayloadDir::new_name();
            let (payloads, file, bytes) = (self.payloads.clone(), name.clone(), item.payload);
            let sha: [u8; 32] = blocking(move || {
                payloads.write_durable(&file, &bytes)?;
                Ok(Sha256::digest(&bytes).into())
            })
            .await?;
            let inserted = self
                .store
                .insert(NewRow {
                    kind: &item.kind,
                    idempotency_key: &item.idempotency_key,
                    payload: PayloadRef::File(&name),
                    payload_len,
                    payload_sha256: &sha,
                    created_at_ms: now,
                    next_attempt_at_ms: due,
                })
                .await;
            match inserted {
                Ok(outcome) if outcome.inserted => outcome,
                // Lost a race with a concurrent enqueue of the same key, or the commit
                // failed: the file is ours alone. Leftovers are swept at the next open.
                other => {
                    self.remove_payload_file(&name).await;
                    other?
                }
            }
        };
        tracing::debug!(
            item_id = %outcome.id,
            kind = %item.kind,
            payload_len = len,
            duplicate = !outcome.inserted,
            "enqueued"
        );
        Ok(EnqueueOutcome {
            id: outcome.id,
            duplicate: !outcome.inserted,
        })
    }

    /// Lease up to `max` due items of `kind` for `lease_for`. Rows that fail validation are
    /// quarantined and left out; the others are returned with their checked payloads.
    pub async fn lease(
        &self,
        kind: &str,
        max: u32,
        lease_for: Duration,
    ) -> Result<Vec<Leased>, QueueError> {
        let now = now_ms();
        let until = now.saturating_add(duration_to_ms(lease_for));
        let rows = self.store.lease(kind, now, until, max).await?;
        let mut leased = Vec::with_capacity(rows.len());
        for row in rows {
            match row {
                Ok(row) => {
                    let id = row.id;
                    match self.check(row, until).await {
                        Ok(item) => leased.push(item),
                        Err(reason) => self.quarantine(id, Some(kind), &reason).await?,
                    }
                }
                Err(bad) => self.quarantine(bad.id, Some(kind), &bad.reason).await?,
            }
        }
        Ok(leased)
    }

    async fn check(&self, row: LeasedRow, until_ms: i64) -> Result<Leased, String> {
        let len = u64::try_from(row.payload_len)
            .map_err(|_| format!("negative payload_len {}", row.payload_len))?;
        let expected: [u8; 32] = row.payload_sha256.as_slice().try_into().map_err(|_| {
            format!(
                "payload checksum has {} bytes, not 32",
                row.payload_sha256.len()
            )
        })?;
        let payload = match (row.payload_inline, &row.payload_file) {
            (Some(bytes), None) => bytes,
            (None, Some(name)) if PayloadDir::is_valid_name(name) => {
                let (payloads, name) = (self.payloads.clone(), name.clone());
                tokio::task::spawn_blocking(move || payloads.read(&name, len))
                    .await
                    .map_err(|e| format!("payload read task: {e}"))??
            }
            (None, Some(_)) => return Err("payload file name is not one of ours".into()),
            _ => return Err("payload must be either inline or in a file".into()),
        };
        if payload.len() as u64 != len {
            return Err(format!(
                "payload has {} bytes, row says {len}",
                payload.len()
            ));
        }
        if <[u8; 32]>::from(Sha256::digest(&payload)) != expected {
            return Err("payload SHA-256 mismatch".into());
        }
        Ok(Leased {
            id: row.id,
            kind: row.kind,
            idempotency_key: row.idempotency_key,
            attempt: row.attempts,
            lease_gen: row.lease_gen,
            created_at: ms_to_time(row.created_at_ms),
            lease_expires_at: ms_to_time(until_ms),
            payload,
            payload_file: row.payload_file,
        })
    }

    async fn quarantine(
        &self,
        id: ItemId,
        kind: Option<&str>,
        reason: &str,
    ) -> Result<(), QueueError> {
        let moved = self.store.quarantine(id, reason, now_ms()).await?;
        tracing::error!(item_id = %id, kind, reason, moved, "queue item quarantined");
        Ok(())
    }

    /// The item is done: one commit, then its payload file (if any) is removed.
    pub async fn ack(&self, leased: &Leased) -> Result<(), QueueError> {
        if !self
            .store
            .complete(leased.id, leased.lease_gen, now_ms())
            .await?
        {
            return Err(QueueError::LeaseLost { id: leased.id });
        }
        if let Some(name) = &leased.payload_file {
            self.remove_payload_file(name).await;
        }
        tracing::debug!(item_id = %leased.id, kind = %leased.kind, attempt = leased.attempt, "acked");
        Ok(())
    }

    /// The delivery failed temporarily: due again after the jittered backoff (or the
    /// peer's clamped `Retry-After`), or dead if the item has outlived `lifetime`.
    pub async fn retry(
        &self,
        leased: &Leased,
        hint: RetryHint,
    ) -> Result<RetryOutcome, QueueError> {
        let now = now_ms();
        let age = ms_to_duration(now.saturating_sub(time_to_ms(leased.created_at)));
        let reason = truncate(&hint.reason, MAX_REASON_LEN);
        if age >= self.config.lifetime {
            let why = format!(
                "lifetime of {}s exceeded after {} attempts: {reason}",
                self.config.lifetime.as_secs(),
                leased.attempt
            );
            self.settle_dead(leased, truncate(&why, MAX_REASON_LEN), now)
                .await?;
            return Ok(RetryOutcome::Dead);
        }
        let delay = self.backoff.delay_for(leased.attempt, hint.retry_after);
        let next = now.saturating_add(duration_to_ms(delay));
        if !self
            .store
            .reschedule(leased.id, leased.lease_gen, next, reason)
            .await?
        {
            return Err(QueueError::LeaseLost { id: leased.id });
        }
        tracing::info!(
            item_id = %leased.id,
            kind = %leased.kind,
            attempt = leased.attempt,
            delay_ms = duration_to_ms(delay),
            reason,
            "delivery failed, retry scheduled"
        );
        Ok(RetryOutcome::Scheduled {
            next_attempt_at: ms_to_time(next),
        })
    }

    /// The delivery failed for good (the caller sends the DSN): the item is dead.
    pub async fn fail_permanent(&self, leased: &Leased, reason: &str) -> Result<(), QueueError> {
        self.settle_dead(leased, truncate(reason, MAX_REASON_LEN), now_ms())
            .await
    }

    async fn settle_dead(&self, leased: &Leased, reason: &str, now: i64) -> Result<(), QueueError> {
        if !self
            .store
            .bury(leased.id, leased.lease_gen, now, reason)
            .await?
        {
            return Err(QueueError::LeaseLost { id: leased.id });
        }
        tracing::warn!(item_id = %leased.id, kind = %leased.kind, attempt = leased.attempt, reason, "item dead");
        Ok(())
    }

    /// When the next item of `kind` becomes due (a queued or failed item's next attempt, a
    /// leased item's lease expiry); `None` when nothing of `kind` is unsettled. Consumers
    /// sleep until then instead of polling blindly.
    pub async fn next_due(&self, kind: &str) -> Result<Option<SystemTime>, QueueError> {
        Ok(self.store.next_due(kind).await?.map(ms_to_time))
    }

    /// Depth, oldest age and dead count per kind, and the quarantine count.
    pub async fn metrics(&self) -> Result<QueueMetrics, QueueError> {
        self.store.metrics(now_ms()).await
    }

    pub async fn get(&self, id: ItemId) -> Result<Option<ItemInfo>, QueueError> {
        self.store.get(id).await
    }

    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<ItemInfo>, QueueError> {
        self.store.list(filter).await
    }

    pub async fn quarantined(&self, limit: u32) -> Result<Vec<QuarantineEntry>, QueueError> {
        self.store.quarantined(limit).await
    }

    /// Delete done rows settled more than `done_retention` ago; their keys are forgotten.
    pub async fn prune_done(&self) -> Result<u64, QueueError> {
        let before = now_ms().saturating_sub(duration_to_ms(self.config.done_retention));
        let pruned = self.store.prune_done(before).await?;
        if pruned > 0 {
            tracing::info!(pruned, "pruned done items past retention");
        }
        Ok(pruned)
    }

    /// Best effort: a file that cannot be removed now is an orphan swept at the next open.
    async fn remove_payload_file(&self, name: &str) {
        let (payloads, owned) = (self.payloads.clone(), name.to_owned());
        if let Err(error) = blocking(move || payloads.remove(&owned)).await {
            tracing::warn!(%error, file = name, "payload file left for the next open's sweep");
        }
    }
}

fn validate_name(field: &'static str, value: &str, max: usize) -> Result<(), QueueError> {
    let reason = if value.is_empty() {
        "must not be empty"
    } else if value.len() > max {
        "too long"
    } else if value.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(QueueError::InvalidInput { field, reason })
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueueError> + Send + 'static,
) -> Result<T, QueueError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| QueueError::PayloadIo {
            op: "run blocking file task",
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        })?
}

fn now_ms() -> i64 {
    time_to_ms(SystemTime::now())
}

fn time_to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, duration_to_ms)
}

fn duration_to_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn ms_to_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + ms_to_duration(ms)
}

pub(crate) fn ms_to_duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
