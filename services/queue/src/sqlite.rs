//! The SQLite [`Store`]: WAL, `synchronous=FULL`, one connection (SQLite has one writer
//! anyway, and one connection keeps every statement's commit ordering obvious).
//!
//! Inserts and acks go through a **group commit**: one task takes every such write waiting at
//! that moment (up to [`GROUP_COMMIT_MAX`]) and runs them in one transaction, so fifty clients
//! submitting at once pay for one synced WAL commit, not fifty queued ones. Each caller is
//! answered only after that commit. If the batch fails, each of its writes is retried alone,
//! so one bad row cannot fail its neighbours.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::store::{InsertOutcome, LeasedRow, NewRow, PayloadRef, Store, UndecodableRow};
use crate::{
    ItemId, ItemInfo, ItemState, KindMetrics, ListFilter, QuarantineEntry, QueueError,
    QueueMetrics, ms_to_duration, ms_to_time,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Most inserts committed together by the group commit.
pub const GROUP_COMMIT_MAX: usize = 256;

/// Durable row storage in one SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writes: mpsc::Sender<WriteRequest>,
}

/// A [`NewRow`] owned, to cross to the group-commit task.
#[derive(Debug)]
struct OwnedRow {
    kind: String,
    idempotency_key: String,
    inline: Option<Vec<u8>>,
    file: Option<String>,
    payload_len: i64,
    payload_sha256: [u8; 32],
    created_at_ms: i64,
    next_attempt_at_ms: i64,
}

impl From<NewRow<'_>> for OwnedRow {
    fn from(row: NewRow<'_>) -> Self {
        let (inline, file) = match row.payload {
            PayloadRef::Inline(bytes) => (Some(bytes.to_vec()), None),
            PayloadRef::File(name) => (None, Some(name.to_owned())),
        };
        Self {
            kind: row.kind.to_owned(),
            idempotency_key: row.idempotency_key.to_owned(),
            inline,
            file,
            payload_len: row.payload_len,
            payload_sha256: *row.payload_sha256,
            created_at_ms: row.created_at_ms,
            next_attempt_at_ms: row.next_attempt_at_ms,
        }
    }
}

/// A write the group commit runs.
#[derive(Debug)]
enum Write {
    Insert(OwnedRow),
    /// Leased → done (the ack), checked against the lease generation.
    Complete {
        id: ItemId,
        lease_gen: i64,
        now_ms: i64,
    },
}

/// What a [`Write`] did.
#[derive(Debug)]
enum Written {
    Inserted(InsertOutcome),
    Completed(bool),
}

#[derive(Debug)]
struct WriteRequest {
    write: Write,
    reply: oneshot::Sender<Result<Written, QueueError>>,
}

/// The group-commit loop; ends when every [`SqliteStore`] clone is dropped.
async fn group_commit(pool: SqlitePool, mut requests: mpsc::Receiver<WriteRequest>) {
    let mut batch = Vec::with_capacity(GROUP_COMMIT_MAX);
    while requests.recv_many(&mut batch, GROUP_COMMIT_MAX).await > 0 {
        if batch.len() > 1 {
            match write_batch(&pool, batch.iter().map(|r| &r.write)).await {
                Ok(outcomes) => {
                    for (request, outcome) in batch.drain(..).zip(outcomes) {
                        // A caller that gave up still has its write committed: at-least-once.
                        let _ = request.reply.send(Ok(outcome));
                    }
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, writes = batch.len(), "group commit failed; writing one by one");
                }
            }
        }
        for request in batch.drain(..) {
            let outcome = write_batch(&pool, std::iter::once(&request.write))
                .await
                .map(|mut done| done.remove(0));
            let _ = request.reply.send(outcome);
        }
    }
}

/// Runs `writes` in one transaction.
async fn write_batch<'a>(
    pool: &SqlitePool,
    writes: impl ExactSizeIterator<Item = &'a Write>,
) -> Result<Vec<Written>, QueueError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(QueueError::storage("begin write batch"))?;
    let mut outcomes = Vec::with_capacity(writes.len());
    for write in writes {
        outcomes.push(match write {
            Write::Insert(row) => Written::Inserted(insert_row(&mut tx, row).await?),
            Write::Complete {
                id,
                lease_gen,
                now_ms,
            } => Written::Completed(complete_row(&mut tx, *id, *lease_gen, *now_ms).await?),
        });
    }
    tx.commit()
        .await
        .map_err(QueueError::storage("commit write batch"))?;
    Ok(outcomes)
}

async fn complete_row(
    tx: &mut Transaction<'_, sqlx::Sqlite>,
    id: ItemId,
    lease_gen: i64,
    now_ms: i64,
) -> Result<bool, QueueError> {
    let done = sqlx::query(
        "UPDATE items SET state = 'done', settled_at = ?1, last_error = NULL, \
                payload = NULL, payload_file = NULL \
         WHERE id = ?2 AND state = 'leased' AND lease_gen = ?3",
    )
    .bind(now_ms)
    .bind(id.0)
    .bind(lease_gen)
    .execute(&mut **tx)
    .await
    .map_err(QueueError::storage("ack item"))?;
    Ok(done.rows_affected() == 1)
}

/// Insert unless the key exists; either way the id holding the key. A duplicate writes
/// nothing.
async fn insert_row(
    tx: &mut Transaction<'_, sqlx::Sqlite>,
    row: &OwnedRow,
) -> Result<InsertOutcome, QueueError> {
    let inserted = sqlx::query(
        "INSERT INTO items (kind, idempotency_key, state, created_at, next_attempt_at, \
                            payload, payload_file, payload_len, payload_sha256) \
         VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (kind, idempotency_key) DO NOTHING RETURNING id",
    )
    .bind(&row.kind)
    .bind(&row.idempotency_key)
    .bind(row.created_at_ms)
    .bind(row.next_attempt_at_ms)
    .bind(row.inline.as_deref())
    .bind(row.file.as_deref())
    .bind(row.payload_len)
    .bind(&row.payload_sha256[..])
    .fetch_optional(&mut **tx)
    .await
    .map_err(QueueError::storage("insert item"))?;
    let (id, inserted) = if let Some(r) = inserted {
        (r.try_get("id"), true)
    } else {
        let existing = sqlx::query("SELECT id FROM items WHERE kind = ? AND idempotency_key = ?")
            .bind(&row.kind)
            .bind(&row.idempotency_key)
            .fetch_one(&mut **tx)
            .await
            .map_err(QueueError::storage("insert item"))?;
        (existing.try_get("id"), false)
    };
    Ok(InsertOutcome {
        id: ItemId(id.map_err(QueueError::storage("insert item"))?),
        inserted,
    })
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` with the durability pragmas and
    /// apply the embedded migrations.
    pub async fn open(path: &Path, busy_timeout: Duration) -> Result<Self, QueueError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // A queue call must not fail because the pool dropped an idle connection.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(QueueError::storage("open database"))?;
        MIGRATOR.run(&pool).await.map_err(QueueError::Migrate)?;
        let (writes, requests) = mpsc::channel(GROUP_COMMIT_MAX);
        tokio::spawn(group_commit(pool.clone(), requests));
        Ok(Self { pool, writes })
    }

    /// The underlying pool, for operators' tooling and tests that must reach past the API.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Hands `write` to the group commit and waits for its commit.
    async fn write(&self, write: Write, op: &'static str) -> Result<Written, QueueError> {
        let (reply, answer) = oneshot::channel();
        let closed = || QueueError::Storage {
            op,
            source: sqlx::Error::PoolClosed,
        };
        self.writes
            .send(WriteRequest { write, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Close the pool, waiting for the connection to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

const LIVE: &str = "('queued', 'failed', 'leased')";

fn decode_leased(row: &SqliteRow) -> Result<LeasedRow, UndecodableRow> {
    let id = ItemId(row.try_get::<i64, _>("id").map_err(|e| UndecodableRow {
        id: ItemId(-1),
        reason: format!("id: {e}"),
    })?);
    let bad = |column: &str, e: &dyn std::fmt::Display| UndecodableRow {
        id,
        reason: format!("column {column}: {e}"),
    };
    let attempts: i64 = row.try_get("attempts").map_err(|e| bad("attempts", &e))?;
    Ok(LeasedRow {
        id,
        kind: row.try_get("kind").map_err(|e| bad("kind", &e))?,
        idempotency_key: row
            .try_get("idempotency_key")
            .map_err(|e| bad("idempotency_key", &e))?,
        attempts: u32::try_from(attempts).map_err(|e| bad("attempts", &e))?,
        lease_gen: row.try_get("lease_gen").map_err(|e| bad("lease_gen", &e))?,
        created_at_ms: row
            .try_get("created_at")
            .map_err(|e| bad("created_at", &e))?,
        payload_inline: row.try_get("payload").map_err(|e| bad("payload", &e))?,
        payload_file: row
            .try_get("payload_file")
            .map_err(|e| bad("payload_file", &e))?,
        payload_len: row
            .try_get("payload_len")
            .map_err(|e| bad("payload_len", &e))?,
        payload_sha256: row
            .try_get("payload_sha256")
            .map_err(|e| bad("payload_sha256", &e))?,
    })
}

fn decode_info(row: &SqliteRow) -> Result<ItemInfo, sqlx::Error> {
    let state: String = row.try_get("state")?;
    let attempts: i64 = row.try_get("attempts")?;
    let payload_len: i64 = row.try_get("payload_len")?;
    let settled_at: Option<i64> = row.try_get("settled_at")?;
    Ok(ItemInfo {
        id: ItemId(row.try_get("id")?),
        kind: row.try_get("kind")?,
        idempotency_key: row.try_get("idempotency_key")?,
        state: state.parse().map_err(|e| sqlx::Error::ColumnDecode {
            index: "state".into(),
            source: Box::new(e),
        })?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        created_at: ms_to_time(row.try_get("created_at")?),
        next_attempt_at: ms_to_time(row.try_get("next_attempt_at")?),
        settled_at: settled_at.map(ms_to_time),
        last_error: row.try_get("last_error")?,
        payload_len: u64::try_from(payload_len).unwrap_or(0),
    })
}

/// Rows of a listing, skipping (and reporting) any that do not decode: one bad row must
/// not hide the others from the operator. Such rows are quarantined at the next open.
fn decode_infos(rows: &[SqliteRow]) -> Vec<ItemInfo> {
    rows.iter()
        .filter_map(|row| match decode_info(row) {
            Ok(info) => Some(info),
            Err(error) => {
                tracing::error!(%error, "queue row does not decode; left out of the listing");
                None
            }
        })
        .collect()
}

const INFO_COLUMNS: &str = "id, kind, idempotency_key, state, attempts, created_at, \
                            next_attempt_at, settled_at, last_error, payload_len";

async fn lease_checked_update(
    pool: &SqlitePool,
    op: &'static str,
    sql: &'static str,
    binds: (ItemId, i64, i64, Option<&str>),
) -> Result<bool, QueueError> {
    let (id, lease_gen, time_ms, reason) = binds;
    let done = sqlx::query(sql)
        .bind(time_ms)
        .bind(reason)
        .bind(id.0)
        .bind(lease_gen)
        .execute(pool)
        .await
        .map_err(QueueError::storage(op))?;
    Ok(done.rows_affected() == 1)
}

impl Store for SqliteStore {
    async fn insert(&self, row: NewRow<'_>) -> Result<InsertOutcome, QueueError> {
        match self.write(Write::Insert(row.into()), "insert item").await? {
            Written::Inserted(outcome) => Ok(outcome),
            Written::Completed(_) => unreachable!("an insert answers Inserted"),
        }
    }

    async fn find_key(
        &self,
        kind: &str,
        idempotency_key: &str,
    ) -> Result<Option<ItemId>, QueueError> {
        let row = sqlx::query("SELECT id FROM items WHERE kind = ? AND idempotency_key = ?")
            .bind(kind)
            .bind(idempotency_key)
            .fetch_optional(&self.pool)
            .await
            .map_err(QueueError::storage("find idempotency key"))?;
        row.map(|r| r.try_get("id").map(ItemId))
            .transpose()
            .map_err(QueueError::storage("find idempotency key"))
    }

    async fn lease(
        &self,
        kind: &str,
        now_ms: i64,
        until_ms: i64,
        max: u32,
    ) -> Result<Vec<Result<LeasedRow, UndecodableRow>>, QueueError> {
        let rows = sqlx::query(&format!(
            "UPDATE items SET state = 'leased', attempts = attempts + 1, \
                    lease_gen = lease_gen + 1, next_attempt_at = ?1 \
             WHERE id IN (SELECT id FROM items \
                          WHERE kind = ?2 AND state IN {LIVE} AND next_attempt_at <= ?3 \
                          ORDER BY next_attempt_at, id LIMIT ?4) \
             RETURNING id, kind, idempotency_key, attempts, lease_gen, created_at, \
                       payload, payload_file, payload_len, payload_sha256"
        ))
        .bind(until_ms)
        .bind(kind)
        .bind(now_ms)
        .bind(i64::from(max))
        .fetch_all(&self.pool)
        .await
        .map_err(QueueError::storage("lease items"))?;
        Ok(rows.iter().map(decode_leased).collect())
    }

    async fn complete(&self, id: ItemId, lease_gen: i64, now_ms: i64) -> Result<bool, QueueError> {
        let write = Write::Complete {
            id,
            lease_gen,
            now_ms,
        };
        match self.write(write, "ack item").await? {
            Written::Completed(done) => Ok(done),
            Written::Inserted(_) => unreachable!("an ack answers Completed"),
        }
    }

    async fn reschedule(
        &self,
        id: ItemId,
        lease_gen: i64,
        next_attempt_at_ms: i64,
        reason: &str,
    ) -> Result<bool, QueueError> {
        lease_checked_update(
            &self.pool,
            "reschedule item",
            "UPDATE items SET state = 'failed', next_attempt_at = ?1, last_error = ?2 \
             WHERE id = ?3 AND state = 'leased' AND lease_gen = ?4",
            (id, lease_gen, next_attempt_at_ms, Some(reason)),
        )
        .await
    }

    async fn bury(
        &self,
        id: ItemId,
        lease_gen: i64,
        now_ms: i64,
        reason: &str,
    ) -> Result<bool, QueueError> {
        lease_checked_update(
            &self.pool,
            "bury item",
            "UPDATE items SET state = 'dead', settled_at = ?1, last_error = ?2 \
             WHERE id = ?3 AND state = 'leased' AND lease_gen = ?4",
            (id, lease_gen, now_ms, Some(reason)),
        )
        .await
    }

    async fn quarantine(&self, id: ItemId, reason: &str, now_ms: i64) -> Result<bool, QueueError> {
        let op = "quarantine item";
        let mut tx: Transaction<'_, sqlx::Sqlite> =
            self.pool.begin().await.map_err(QueueError::storage(op))?;
        let moved = sqlx::query(
            "INSERT INTO quarantine (item_id, kind, idempotency_key, state, attempts, \
                 created_at, payload, payload_file, payload_len, payload_sha256, last_error, \
                 reason, quarantined_at) \
             SELECT id, kind, idempotency_key, state, attempts, created_at, payload, \
                    payload_file, payload_len, payload_sha256, last_error, ?, ? \
             FROM items WHERE id = ?",
        )
        .bind(reason)
        .bind(now_ms)
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(QueueError::storage(op))?;
        sqlx::query("DELETE FROM items WHERE id = ?")
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(QueueError::storage(op))?;
        tx.commit().await.map_err(QueueError::storage(op))?;
        Ok(moved.rows_affected() == 1)
    }

    async fn find_invalid(&self) -> Result<Vec<UndecodableRow>, QueueError> {
        let rows = sqlx::query(
            "SELECT id, reason FROM (SELECT id, CASE \
               WHEN typeof(kind) != 'text' OR kind = '' THEN 'kind is not a non-empty text' \
               WHEN typeof(idempotency_key) != 'text' OR idempotency_key = '' \
                    THEN 'idempotency_key is not a non-empty text' \
               WHEN typeof(state) != 'text' \
                    OR state NOT IN ('queued', 'leased', 'failed', 'done', 'dead') \
                    THEN 'unknown state' \
               WHEN typeof(attempts) != 'integer' OR attempts < 0 \
                    OR attempts > 4294967295 THEN 'attempts is not a small integer' \
               WHEN typeof(lease_gen) != 'integer' THEN 'lease_gen is not an integer' \
               WHEN typeof(created_at) != 'integer' OR typeof(next_attempt_at) != 'integer' \
                    OR (settled_at IS NOT NULL AND typeof(settled_at) != 'integer') \
                    THEN 'timestamp is not an integer' \
               WHEN typeof(payload_len) != 'integer' OR payload_len < 0 \
                    THEN 'payload_len is not a length' \
               WHEN typeof(payload_sha256) != 'blob' OR length(payload_sha256) != 32 \
                    THEN 'payload checksum is not 32 bytes' \
               WHEN payload IS NOT NULL AND typeof(payload) != 'blob' \
                    THEN 'inline payload is not a blob' \
               WHEN payload_file IS NOT NULL AND typeof(payload_file) != 'text' \
                    THEN 'payload file name is not text' \
               WHEN state != 'done' AND (payload IS NULL) = (payload_file IS NULL) \
                    THEN 'payload must be either inline or in a file' \
               WHEN last_error IS NOT NULL AND typeof(last_error) != 'text' \
                    THEN 'last_error is not text' \
             END AS reason FROM items) WHERE reason IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(QueueError::storage("validate items"))?;
        rows.iter()
            .map(|r| {
                Ok(UndecodableRow {
                    id: ItemId(r.try_get("id")?),
                    reason: r.try_get("reason")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(QueueError::storage("validate items"))
    }

    async fn referenced_payload_files(&self) -> Result<Vec<String>, QueueError> {
        let rows = sqlx::query(
            "SELECT payload_file AS f FROM items WHERE typeof(payload_file) = 'text' \
             UNION SELECT payload_file FROM quarantine WHERE typeof(payload_file) = 'text'",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(QueueError::storage("list payload files"))?;
        rows.iter()
            .map(|r| r.try_get("f"))
            .collect::<Result<_, _>>()
            .map_err(QueueError::storage("list payload files"))
    }

    async fn next_due(&self, kind: &str) -> Result<Option<i64>, QueueError> {
        let row = sqlx::query(&format!(
            "SELECT MIN(next_attempt_at) AS due FROM items WHERE kind = ? AND state IN {LIVE}"
        ))
        .bind(kind)
        .fetch_one(&self.pool)
        .await
        .map_err(QueueError::storage("next due item"))?;
        row.try_get("due")
            .map_err(QueueError::storage("next due item"))
    }

    async fn metrics(&self, now_ms: i64) -> Result<QueueMetrics, QueueError> {
        let op = "queue metrics";
        let live = sqlx::query(&format!(
            "SELECT kind, COUNT(*) AS depth, SUM(state = 'leased') AS leased, \
                    MIN(created_at) AS oldest \
             FROM items WHERE state IN {LIVE} GROUP BY kind"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(QueueError::storage(op))?;
        let dead = sqlx::query(
            "SELECT kind, COUNT(*) AS dead FROM items WHERE state = 'dead' GROUP BY kind",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(QueueError::storage(op))?;
        let quarantined: i64 = sqlx::query("SELECT COUNT(*) AS n FROM quarantine")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(QueueError::storage(op))?;

        let mut kinds: Vec<KindMetrics> = Vec::new();
        for r in &live {
            let oldest: i64 = r.try_get("oldest").map_err(QueueError::storage(op))?;
            kinds.push(KindMetrics {
                kind: r.try_get("kind").map_err(QueueError::storage(op))?,
                depth: count(r, "depth").map_err(QueueError::storage(op))?,
                leased: count(r, "leased").map_err(QueueError::storage(op))?,
                dead: 0,
                oldest_age: ms_to_duration(now_ms.saturating_sub(oldest)),
            });
        }
        for r in &dead {
            let kind: String = r.try_get("kind").map_err(QueueError::storage(op))?;
            let n = count(r, "dead").map_err(QueueError::storage(op))?;
            if let Some(k) = kinds.iter_mut().find(|k| k.kind == kind) {
                k.dead = n;
            } else {
                kinds.push(KindMetrics {
                    kind,
                    depth: 0,
                    leased: 0,
                    dead: n,
                    oldest_age: Duration::ZERO,
                });
            }
        }
        kinds.sort_by(|a, b| a.kind.cmp(&b.kind));
        Ok(QueueMetrics {
            kinds,
            quarantined: u64::try_from(quarantined).unwrap_or(0),
        })
    }

    async fn get(&self, id: ItemId) -> Result<Option<ItemInfo>, QueueError> {
        let row = sqlx::query(&format!("SELECT {INFO_COLUMNS} FROM items WHERE id = ?"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(QueueError::storage("get item"))?;
        row.as_ref()
            .map(decode_info)
            .transpose()
            .map_err(QueueError::storage("get item"))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ItemInfo>, QueueError> {
        let rows = sqlx::query(&format!(
            "SELECT {INFO_COLUMNS} FROM items \
             WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR state = ?2) AND id > ?3 \
             ORDER BY id LIMIT ?4"
        ))
        .bind(filter.kind.as_deref())
        .bind(filter.state.map(ItemState::as_str))
        .bind(filter.after.map_or(i64::MIN, |id| id.0))
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(QueueError::storage("list items"))?;
        Ok(decode_infos(&rows))
    }

    async fn quarantined(&self, limit: u32) -> Result<Vec<QuarantineEntry>, QueueError> {
        let rows = sqlx::query(
            "SELECT qid, item_id, kind, idempotency_key, reason, quarantined_at \
             FROM quarantine ORDER BY qid LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(QueueError::storage("list quarantine"))?;
        rows.iter()
            .map(|r| {
                Ok(QuarantineEntry {
                    quarantine_id: r.try_get("qid")?,
                    // Whatever the corrupt row held: shown when it decodes, else absent.
                    item_id: r.try_get::<i64, _>("item_id").ok().map(ItemId),
                    kind: r.try_get("kind").ok(),
                    idempotency_key: r.try_get("idempotency_key").ok(),
                    reason: r.try_get("reason")?,
                    quarantined_at: ms_to_time(r.try_get("quarantined_at")?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(QueueError::storage("list quarantine"))
    }

    async fn prune_done(&self, before_ms: i64) -> Result<u64, QueueError> {
        let done = sqlx::query("DELETE FROM items WHERE state = 'done' AND settled_at < ?")
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(QueueError::storage("prune done items"))?;
        Ok(done.rows_affected())
    }
}

fn count(row: &SqliteRow, column: &str) -> Result<u64, sqlx::Error> {
    let n: i64 = row.try_get(column)?;
    Ok(u64::try_from(n).unwrap_or(0))
}
