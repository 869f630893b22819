//! Per-folder UIDVALIDITY/UID bookkeeping. Not the durability point (the inbox queue is):
//! a lost write only means a message is fetched again and absorbed by the queue's
//! idempotency key, so commits here use `synchronous=NORMAL`.

use std::path::Path;
use std::str::FromStr as _;

use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};

use crate::MirrorError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS folders (
    bal TEXT NOT NULL, folder TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    last_uid INTEGER NOT NULL,
    -- after a UIDVALIDITY change, UIDs up to this one are matched by content first
    dedup_until_uid INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (bal, folder));
CREATE TABLE IF NOT EXISTS messages (
    bal TEXT NOT NULL, folder TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL,
    sha256 BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'delivered', 'deleted')),
    PRIMARY KEY (bal, folder, uidvalidity, uid));
CREATE INDEX IF NOT EXISTS messages_sha ON messages (bal, folder, sha256);
-- EX_GBM_4430: mailbox-full and out-of-office notices received by applicative BALs,
-- one per mirrored message (a redelivery records nothing new).
CREATE TABLE IF NOT EXISTS notices (
    bal TEXT NOT NULL, folder TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL,
    kind TEXT NOT NULL,
    address TEXT NOT NULL,
    status TEXT,
    original_message_id TEXT,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (bal, folder, uidvalidity, uid));
";

/// A notice an applicative BAL received (EX_GBM_4430), as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedNotice {
    pub bal: String,
    /// `mailbox-full` or `out-of-office`.
    pub kind: String,
    /// The full mailbox, or the absent correspondent.
    pub address: String,
    /// RFC 3463 status of a mailbox-full DSN (`4.2.2`, `5.2.2`).
    pub status: Option<String>,
    /// The BAL's message the notice is about, when the notice names it.
    pub original_message_id: Option<String>,
    /// Seconds since the Unix epoch.
    pub received_at: i64,
}

/// A folder's recorded position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FolderState {
    pub(crate) uidvalidity: u32,
    pub(crate) last_uid: u32,
    pub(crate) dedup_until_uid: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct MirrorDb {
    pool: SqlitePool,
}

impl MirrorDb {
    pub(crate) async fn open(path: &Path) -> Result<Self, MirrorError> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        Ok(Self { pool })
    }

    pub(crate) async fn folder(
        &self,
        bal: &str,
        folder: &str,
    ) -> Result<Option<FolderState>, MirrorError> {
        let row = sqlx::query(
            "SELECT uidvalidity, last_uid, dedup_until_uid FROM folders WHERE bal = ? AND folder = ?",
        )
        .bind(bal)
        .bind(folder)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| FolderState {
            uidvalidity: u32::try_from(r.get::<i64, _>(0)).unwrap_or(0),
            last_uid: u32::try_from(r.get::<i64, _>(1)).unwrap_or(0),
            dedup_until_uid: u32::try_from(r.get::<i64, _>(2)).unwrap_or(0),
        }))
    }

    pub(crate) async fn set_folder(
        &self,
        bal: &str,
        folder: &str,
        state: FolderState,
    ) -> Result<(), MirrorError> {
        sqlx::query(
            "INSERT INTO folders (bal, folder, uidvalidity, last_uid, dedup_until_uid) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (bal, folder) DO UPDATE SET uidvalidity = excluded.uidvalidity,
               last_uid = excluded.last_uid, dedup_until_uid = excluded.dedup_until_uid",
        )
        .bind(bal)
        .bind(folder)
        .bind(i64::from(state.uidvalidity))
        .bind(i64::from(state.last_uid))
        .bind(i64::from(state.dedup_until_uid))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The state of a message with these bytes already seen in the folder (any UIDVALIDITY).
    pub(crate) async fn seen_content(
        &self,
        bal: &str,
        folder: &str,
        sha256: &[u8],
    ) -> Result<Option<String>, MirrorError> {
        Ok(sqlx::query_scalar(
            "SELECT state FROM messages WHERE bal = ? AND folder = ? AND sha256 = ? LIMIT 1",
        )
        .bind(bal)
        .bind(folder)
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await?)
    }

    #[allow(clippy::too_many_arguments)] // one row's columns
    pub(crate) async fn record(
        &self,
        bal: &str,
        folder: &str,
        uidvalidity: u32,
        uid: u32,
        sha256: &[u8],
        state: &str,
    ) -> Result<(), MirrorError> {
        sqlx::query(
            "INSERT INTO messages (bal, folder, uidvalidity, uid, sha256, state) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(bal)
        .bind(folder)
        .bind(i64::from(uidvalidity))
        .bind(i64::from(uid))
        .bind(sha256)
        .bind(state)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a notice; `false` if this message's notice was already recorded.
    pub(crate) async fn record_notice(
        &self,
        origin: &crate::deliver::Origin,
        notice: &passerelle_smtp::Notice,
    ) -> Result<bool, MirrorError> {
        let (address, status, original) = match notice {
            passerelle_smtp::Notice::MailboxFull {
                recipient,
                status,
                original_message_id,
            } => (recipient, Some(status), original_message_id),
            passerelle_smtp::Notice::OutOfOffice {
                from,
                original_message_id,
            } => (from, None, original_message_id),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let done = sqlx::query(
            "INSERT INTO notices (bal, folder, uidvalidity, uid, kind, address, status, \
                                  original_message_id, received_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&origin.bal)
        .bind(&origin.folder)
        .bind(i64::from(origin.uidvalidity))
        .bind(i64::from(origin.uid))
        .bind(notice.kind())
        .bind(address)
        .bind(status)
        .bind(original)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The most recent notices, newest first.
    pub(crate) async fn notices(&self, limit: u32) -> Result<Vec<RecordedNotice>, MirrorError> {
        let rows = sqlx::query(
            "SELECT bal, kind, address, status, original_message_id, received_at FROM notices \
             ORDER BY received_at DESC, rowid DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| RecordedNotice {
                bal: r.get(0),
                kind: r.get(1),
                address: r.get(2),
                status: r.get(3),
                original_message_id: r.get(4),
                received_at: r.get(5),
            })
            .collect())
    }

    pub(crate) async fn mark(
        &self,
        bal: &str,
        folder: &str,
        uidvalidity: u32,
        uids: &[u32],
        state: &str,
    ) -> Result<(), MirrorError> {
        let mut tx = self.pool.begin().await?;
        for uid in uids {
            sqlx::query(
                "UPDATE messages SET state = ? WHERE bal = ? AND folder = ? AND uidvalidity = ? AND uid = ?",
            )
            .bind(state)
            .bind(bal)
            .bind(folder)
            .bind(i64::from(uidvalidity))
            .bind(i64::from(*uid))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// UIDs locally delivered and still on the operator.
    pub(crate) async fn delivered(
        &self,
        bal: &str,
        folder: &str,
        uidvalidity: u32,
    ) -> Result<Vec<u32>, MirrorError> {
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT uid FROM messages WHERE bal = ? AND folder = ? AND uidvalidity = ? AND state = 'delivered' ORDER BY uid LIMIT 1000",
        )
        .bind(bal)
        .bind(folder)
        .bind(i64::from(uidvalidity))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|u| u32::try_from(u).ok())
            .collect())
    }
}
