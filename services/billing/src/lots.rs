//! The lot store: one SQLite database (`lots.db`, WAL, `synchronous=FULL`) with the current
//! state of every lot and its history, and the pre-encryption content of every lot not yet
//! acknowledged in `content/<lot id>` (a 4005 or 4025 asks to resend the same content,
//! re-encrypted; the queue drops its payload once the mail is sent, so the content lives
//! here).
//!
//! States: `received → encrypted → sent → acknowledged | rejected | overdue`, plus
//! `blocked` (a [CE1]/[CE2] rule forbids sending; nothing is sent unencrypted) and `refused`
//! (the input was not a lot; the file is kept in the spool's `refused/` folder). A resend
//! (4005, 4025, negative ARL followed by the operator) takes a sent, overdue or rejected lot
//! back to `received`. `acknowledged` is final: a duplicate ARL changes nothing.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::error::BillingError;
use crate::intake::LotMeta;
use crate::lot_file::LotId;

/// Where a lot stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LotState {
    Received,
    Blocked,
    Encrypted,
    Sent,
    Acknowledged,
    Rejected,
    Overdue,
    Refused,
}

impl LotState {
    pub const ALL: [LotState; 8] = [
        Self::Received,
        Self::Blocked,
        Self::Encrypted,
        Self::Sent,
        Self::Acknowledged,
        Self::Rejected,
        Self::Overdue,
        Self::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Blocked => "blocked",
            Self::Encrypted => "encrypted",
            Self::Sent => "sent",
            Self::Acknowledged => "acknowledged",
            Self::Rejected => "rejected",
            Self::Overdue => "overdue",
            Self::Refused => "refused",
        }
    }

    /// Whether the state machine allows `self → to`.
    pub fn allows(self, to: LotState) -> bool {
        use LotState::{Acknowledged, Blocked, Encrypted, Overdue, Received, Rejected, Sent};
        matches!(
            (self, to),
            (Received | Blocked, Encrypted | Blocked)
                | (Encrypted, Sent | Blocked | Encrypted | Rejected)
                | (Sent, Acknowledged | Rejected | Overdue)
                | (Overdue, Acknowledged | Rejected)
                // Resend of the same content (4005, 4025, operator after a negative ARL).
                | (Sent | Overdue | Rejected, Received)
        )
    }

    /// No further transition happens without an outside event.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Acknowledged | Self::Refused)
    }
}

impl std::fmt::Display for LotState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LotState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown lot state {s:?}"))
    }
}

/// A lot as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lot {
    pub id: LotId,
    pub meta: LotMeta,
    pub state: LotState,
    /// Why the lot is in its state (the refusal, the blocking rule, the ARL, the 4005…).
    pub reason: String,
    pub received_at: SystemTime,
    pub updated_at: SystemTime,
    /// Times the lot was sent (a resend counts).
    pub sends: u32,
    /// Message-ID of the last mail sent (service messages and ARLs refer to it).
    pub message_id: Option<String>,
    /// Times the lot was put back to be sent again (4005, 4025, operator resend); the queue
    /// item of each round has its own key.
    pub round: u32,
    /// The last ARL matched to the lot, if any.
    pub arl: Option<ArlReceipt>,
}

/// OCT profile: the practice a lot came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LotOrigin {
    pub practice: String,
    /// Where the lot's returns are forwarded.
    pub return_to: String,
    /// The Message-ID of the practice's mail (quoted in forwarded returns).
    pub message_id: String,
}

/// An ARL matched to a lot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArlReceipt {
    pub at: SystemTime,
    pub positive: bool,
    /// The raw return as kept under `returns/raw/` (file name).
    pub return_file: String,
}

/// One recorded step of a lot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub at: SystemTime,
    pub from: Option<LotState>,
    pub to: LotState,
    pub reason: String,
}

/// The store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LotStore {
    pool: SqlitePool,
    content_dir: PathBuf,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS lots (
        id TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        env TEXT NOT NULL,
        recipient TEXT NOT NULL,
        subject TEXT NOT NULL,
        file_name TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        sends INTEGER NOT NULL DEFAULT 0,
        message_id TEXT,
        round INTEGER NOT NULL DEFAULT 0,
        arl_at INTEGER,
        arl_positive INTEGER,
        arl_return TEXT
    )",
    "CREATE INDEX IF NOT EXISTS lots_state ON lots(state)",
    "CREATE INDEX IF NOT EXISTS lots_message_id ON lots(message_id)",
    "CREATE TABLE IF NOT EXISTS lot_history (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        lot_id TEXT NOT NULL,
        at INTEGER NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        reason TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS lot_history_lot ON lot_history(lot_id)",
    // OCT profile: the practice each lot came from, where its returns go.
    "CREATE TABLE IF NOT EXISTS lot_origins (
        lot_id TEXT PRIMARY KEY,
        practice TEXT NOT NULL,
        return_to TEXT NOT NULL,
        message_id TEXT NOT NULL
    )",
    // Where the IMAP returns route stands in each mailbox folder (handled once).
    "CREATE TABLE IF NOT EXISTS imap_positions (
        mailbox TEXT PRIMARY KEY,
        uidvalidity INTEGER NOT NULL,
        last_uid INTEGER NOT NULL
    )",
];

/// The columns of a lot row, named: `SELECT *` would keep a connection's cached column list
/// across a schema change.
const LOT_COLUMNS: &str = "id, flow, env, recipient, subject, file_name, state, reason, \
    received_at, updated_at, sends, message_id, round, arl_at, arl_positive, arl_return";

/// Columns added after the first schema: (name, definition). Added when missing, so a store
/// written by an older build opens (and the CLI and the daemon may both open it).
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("round", "INTEGER NOT NULL DEFAULT 0"),
    ("arl_at", "INTEGER"),
    ("arl_positive", "INTEGER"),
    ("arl_return", "TEXT"),
];

/// Longest reason stored (reasons quote peers; they are bounded like every outside input).
const MAX_REASON: usize = 1000;

fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn bounded(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

impl LotStore {
    /// Open (or create) the store in `dir`: `dir/lots.db` and `dir/content/`.
    pub async fn open(dir: &Path) -> Result<Self, BillingError> {
        let content_dir = dir.join("content");
        tokio::fs::create_dir_all(&content_dir)
            .await
            .map_err(BillingError::io(&content_dir))?;
        let options = SqliteConnectOptions::new()
            .filename(dir.join("lots.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await?;
        }
        let have: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('lots')")
            .fetch_all(&pool)
            .await?;
        for (name, definition) in ADDED_COLUMNS {
            if have.iter().any(|h| h == name) {
                continue;
            }
            let added = sqlx::query(&format!("ALTER TABLE lots ADD COLUMN {name} {definition}"))
                .execute(&pool)
                .await;
            match added {
                Ok(_) => {}
                // Another process (the CLI, the daemon) added it meanwhile.
                Err(sqlx::Error::Database(e)) if e.message().contains("duplicate column") => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Self { pool, content_dir })
    }

    /// Record a received lot and store its content durably. `false` when the lot was already
    /// stored (same content offered again): nothing changes.
    pub async fn insert_received(
        &self,
        id: &LotId,
        meta: &LotMeta,
        content: &[u8],
    ) -> Result<bool, BillingError> {
        if self.get(id).await?.is_some() {
            return Ok(false);
        }
        // Content first: a row never points at content that is not on disk.
        self.write_content(id, content).await?;
        self.insert(id, meta, LotState::Received, "received from the LPS")
            .await
    }

    /// Record input that is not a lot, with the reason; its file is kept by the caller.
    pub async fn insert_refused(
        &self,
        id: &LotId,
        meta: &LotMeta,
        why: &str,
    ) -> Result<bool, BillingError> {
        self.insert(id, meta, LotState::Refused, why).await
    }

    async fn insert(
        &self,
        id: &LotId,
        meta: &LotMeta,
        state: LotState,
        reason: &str,
    ) -> Result<bool, BillingError> {
        let now = now_ms();
        let reason = bounded(reason);
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO lots (id, flow, env, recipient, subject, file_name, state, reason,
                received_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(id) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(meta.flow.as_str())
        .bind(meta.env.as_str())
        .bind(meta.recipient.as_str())
        .bind(&meta.subject)
        .bind(&meta.file_name)
        .bind(state.as_str())
        .bind(&reason)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            sqlx::query(
                "INSERT INTO lot_history (lot_id, at, from_state, to_state, reason)
                 VALUES (?, ?, NULL, ?, ?)",
            )
            .bind(id.as_str())
            .bind(now)
            .bind(state.as_str())
            .bind(&reason)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn write_content(&self, id: &LotId, content: &[u8]) -> Result<(), BillingError> {
        let dir = self.content_dir.clone();
        let name = id.as_str().to_owned();
        let content = content.to_vec();
        tokio::task::spawn_blocking(move || write_durably(&dir, &name, &content))
            .await
            .map_err(|e| BillingError::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(e),
            })?
    }

    /// The pre-encryption content of a lot not yet acknowledged.
    pub async fn content(&self, id: &LotId) -> Result<Vec<u8>, BillingError> {
        let path = self.content_dir.join(id.as_str());
        tokio::fs::read(&path).await.map_err(BillingError::io(path))
    }

    /// Move `id` to `to` with `reason`, if the state machine allows it. Returns the previous
    /// state; `Ok(None)` when the lot is already in `to` (a duplicate event: nothing changes,
    /// nothing is recorded).
    pub async fn transition(
        &self,
        id: &LotId,
        to: LotState,
        reason: &str,
    ) -> Result<Option<LotState>, BillingError> {
        let reason = bounded(reason);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT state FROM lots WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| BillingError::UnknownLot {
                lot: id.to_string(),
            })?;
        let from: LotState =
            row.get::<String, _>("state")
                .parse()
                .map_err(|why| BillingError::Corrupt {
                    lot: id.to_string(),
                    why,
                })?;
        // Same state again is idempotent, except re-encryption and blocking, whose reason
        // (certificate used, rule) is worth recording each time.
        if from == to && !matches!(to, LotState::Encrypted | LotState::Blocked) {
            return Ok(None);
        }
        if !from.allows(to) {
            return Err(BillingError::Transition {
                lot: id.to_string(),
                from: from.as_str(),
                to: to.as_str(),
            });
        }
        let now = now_ms();
        sqlx::query("UPDATE lots SET state = ?, reason = ?, updated_at = ? WHERE id = ?")
            .bind(to.as_str())
            .bind(&reason)
            .bind(now)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO lot_history (lot_id, at, from_state, to_state, reason)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(now)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(&reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(lot = %id, from = %from, to = %to, "lot state");
        if to == LotState::Acknowledged {
            // Acknowledged: the content is no longer needed for a resend.
            let path = self.content_dir.join(id.as_str());
            if let Err(e) = tokio::fs::remove_file(&path).await {
                tracing::warn!(lot = %id, error = %e, "could not remove the acknowledged lot's content");
            }
        }
        Ok(Some(from))
    }

    /// Record an event that does not change the state (a 4015, an unusable return): the
    /// lot's reason and its history say what happened.
    pub async fn note(&self, id: &LotId, reason: &str) -> Result<(), BillingError> {
        let reason = bounded(reason);
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM lots WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let state = state.ok_or_else(|| BillingError::UnknownLot {
            lot: id.to_string(),
        })?;
        sqlx::query("UPDATE lots SET reason = ?, updated_at = updated_at WHERE id = ?")
            .bind(&reason)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO lot_history (lot_id, at, from_state, to_state, reason)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(now)
        .bind(&state)
        .bind(&state)
        .bind(&reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Record a send: state `sent`, the Message-ID the returns will refer to.
    pub async fn mark_sent(&self, id: &LotId, message_id: &str) -> Result<(), BillingError> {
        self.transition(id, LotState::Sent, &format!("sent as {message_id}"))
            .await?;
        sqlx::query("UPDATE lots SET sends = sends + 1, message_id = ? WHERE id = ?")
            .bind(message_id)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Put `id` back to `received` for another round of sending, if it is in one of `from`;
    /// returns the new round (the queue key of the resend). One conditional `UPDATE`, so the
    /// daemon and the CLI can race on it: exactly one wins, the other sees the new state.
    pub async fn reopen(
        &self,
        id: &LotId,
        from: &[LotState],
        reason: &str,
    ) -> Result<Result<u32, LotState>, BillingError> {
        let reason = bounded(reason);
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let placeholders = vec!["?"; from.len()].join(", ");
        let sql = format!(
            "UPDATE lots SET state = 'received', reason = ?, updated_at = ?, round = round + 1
             WHERE id = ? AND state IN ({placeholders}) RETURNING round"
        );
        let mut q = sqlx::query_scalar::<_, i64>(&sql)
            .bind(&reason)
            .bind(now)
            .bind(id.as_str());
        for f in from {
            q = q.bind(f.as_str());
        }
        let Some(round) = q.fetch_optional(&mut *tx).await? else {
            drop(tx);
            let lot = self
                .get(id)
                .await?
                .ok_or_else(|| BillingError::UnknownLot {
                    lot: id.to_string(),
                })?;
            return Ok(Err(lot.state));
        };
        // The state it left: the last recorded one (the UPDATE above already replaced it).
        let prev: Option<String> = sqlx::query_scalar(
            "SELECT to_state FROM lot_history WHERE lot_id = ? ORDER BY seq DESC LIMIT 1",
        )
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO lot_history (lot_id, at, from_state, to_state, reason)
             VALUES (?, ?, ?, 'received', ?)",
        )
        .bind(id.as_str())
        .bind(now)
        .bind(prev)
        .bind(&reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(lot = %id, round, "lot put back to be sent again");
        Ok(Ok(u32::try_from(round).unwrap_or(u32::MAX)))
    }

    /// Remember the ARL matched to `id` (kept raw as `return_file`).
    pub async fn record_arl(
        &self,
        id: &LotId,
        positive: bool,
        return_file: &str,
    ) -> Result<(), BillingError> {
        sqlx::query("UPDATE lots SET arl_at = ?, arl_positive = ?, arl_return = ? WHERE id = ?")
            .bind(now_ms())
            .bind(positive)
            .bind(bounded(return_file))
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// OCT profile: remember which practice sent lot `id` (its returns go to `return_to`).
    pub async fn set_origin(
        &self,
        id: &LotId,
        practice: &str,
        return_to: &str,
        message_id: &str,
    ) -> Result<(), BillingError> {
        sqlx::query(
            "INSERT INTO lot_origins (lot_id, practice, return_to, message_id) VALUES (?, ?, ?, ?)
             ON CONFLICT(lot_id) DO UPDATE SET practice = excluded.practice,
                 return_to = excluded.return_to, message_id = excluded.message_id",
        )
        .bind(id.as_str())
        .bind(bounded(practice))
        .bind(bounded(return_to))
        .bind(bounded(message_id))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// OCT profile: the practice lot `id` came from, if it came through the OCT intake.
    pub async fn origin(&self, id: &LotId) -> Result<Option<LotOrigin>, BillingError> {
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT practice, return_to, message_id FROM lot_origins WHERE lot_id = ?",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(practice, return_to, message_id)| LotOrigin {
            practice,
            return_to,
            message_id,
        }))
    }

    /// The (UIDVALIDITY, highest UID handled) of an IMAP folder of returns.
    pub async fn imap_position(&self, mailbox: &str) -> Result<Option<(u32, u32)>, BillingError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT uidvalidity, last_uid FROM imap_positions WHERE mailbox = ?")
                .bind(mailbox)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(v, u)| (u32::try_from(v).unwrap_or(0), u32::try_from(u).unwrap_or(0))))
    }

    pub async fn set_imap_position(
        &self,
        mailbox: &str,
        uidvalidity: u32,
        last_uid: u32,
    ) -> Result<(), BillingError> {
        sqlx::query(
            "INSERT INTO imap_positions (mailbox, uidvalidity, last_uid) VALUES (?, ?, ?)
             ON CONFLICT(mailbox) DO UPDATE SET uidvalidity = excluded.uidvalidity,
                 last_uid = excluded.last_uid",
        )
        .bind(mailbox)
        .bind(i64::from(uidvalidity))
        .bind(i64::from(last_uid))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How many lots are in each state (every state listed, zeros included).
    pub async fn counts(&self) -> Result<Vec<(LotState, u64)>, BillingError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM lots GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        Ok(LotState::ALL
            .into_iter()
            .map(|st| {
                let n = rows
                    .iter()
                    .find(|(s, _)| s == st.as_str())
                    .map_or(0, |(_, n)| u64::try_from(*n).unwrap_or(0));
                (st, n)
            })
            .collect())
    }

    pub async fn get(&self, id: &LotId) -> Result<Option<Lot>, BillingError> {
        let row = sqlx::query(&format!("SELECT {LOT_COLUMNS} FROM lots WHERE id = ?"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| lot_from_row(&r)).transpose()
    }

    /// The lot last sent with this Message-ID.
    pub async fn by_message_id(&self, message_id: &str) -> Result<Option<Lot>, BillingError> {
        let row = sqlx::query(&format!(
            "SELECT {LOT_COLUMNS} FROM lots WHERE message_id = ?"
        ))
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| lot_from_row(&r)).transpose()
    }

    /// Lots, oldest first; only those in `state` if given.
    pub async fn list(&self, state: Option<LotState>) -> Result<Vec<Lot>, BillingError> {
        let rows = match state {
            Some(s) => {
                sqlx::query(&format!(
                    "SELECT {LOT_COLUMNS} FROM lots WHERE state = ? ORDER BY received_at, id"
                ))
                .bind(s.as_str())
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {LOT_COLUMNS} FROM lots ORDER BY received_at, id"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(lot_from_row).collect()
    }

    pub async fn history(&self, id: &LotId) -> Result<Vec<Transition>, BillingError> {
        let rows = sqlx::query(
            "SELECT at, from_state, to_state, reason FROM lot_history WHERE lot_id = ? ORDER BY seq",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        let corrupt = |why| BillingError::Corrupt {
            lot: id.to_string(),
            why,
        };
        rows.iter()
            .map(|r| {
                Ok(Transition {
                    at: from_ms(r.get("at")),
                    from: r
                        .get::<Option<String>, _>("from_state")
                        .map(|s| s.parse())
                        .transpose()
                        .map_err(corrupt)?,
                    to: r.get::<String, _>("to_state").parse().map_err(corrupt)?,
                    reason: r.get("reason"),
                })
            })
            .collect()
    }

    /// Sent lots whose last transition is older than `deadline` before `now`: they go
    /// `overdue` (the missing-ARL alert, digest §8 #9). Returns the lots moved.
    pub async fn mark_overdue(
        &self,
        deadline: Duration,
        now: SystemTime,
    ) -> Result<Vec<LotId>, BillingError> {
        let cutoff =
            to_ms(now).saturating_sub(i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX));
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM lots WHERE state = 'sent' AND updated_at <= ?")
                .bind(cutoff)
                .fetch_all(&self.pool)
                .await?;
        let mut moved = Vec::new();
        for id in ids.iter().filter_map(|s| LotId::parse(s)) {
            let why = format!(
                "no ARL within {}: follow up with the caisse",
                humantime_serde::re::humantime::format_duration(deadline)
            );
            if self
                .transition(&id, LotState::Overdue, &why)
                .await?
                .is_some()
            {
                tracing::warn!(lot = %id, "ARL missing past its deadline");
                moved.push(id);
            }
        }
        Ok(moved)
    }
}

fn lot_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Lot, BillingError> {
    let id: String = r.get("id");
    let corrupt = |why: String| BillingError::Corrupt {
        lot: id.clone(),
        why,
    };
    let meta = LotMeta {
        flow: crate::intake::parse_flow(&r.get::<String, _>("flow")).map_err(corrupt)?,
        env: crate::intake::parse_env(&r.get::<String, _>("env")).map_err(corrupt)?,
        recipient: r.get::<String, _>("recipient").parse().map_err(corrupt)?,
        subject: r.get("subject"),
        file_name: r.get("file_name"),
    };
    Ok(Lot {
        id: LotId::parse(&id).ok_or_else(|| corrupt("bad lot id".into()))?,
        meta,
        state: r.get::<String, _>("state").parse().map_err(corrupt)?,
        reason: r.get("reason"),
        received_at: from_ms(r.get("received_at")),
        updated_at: from_ms(r.get("updated_at")),
        sends: u32::try_from(r.get::<i64, _>("sends")).unwrap_or(0),
        message_id: r.get("message_id"),
        round: u32::try_from(r.get::<i64, _>("round")).unwrap_or(0),
        arl: match (
            r.get::<Option<i64>, _>("arl_at"),
            r.get::<Option<bool>, _>("arl_positive"),
        ) {
            (Some(at), Some(positive)) => Some(ArlReceipt {
                at: from_ms(at),
                positive,
                return_file: r.get::<Option<String>, _>("arl_return").unwrap_or_default(),
            }),
            _ => None,
        },
    })
}

/// Write `dir/name` so that it survives a power cut once this returns: temporary file,
/// fsync, rename, directory fsync.
pub(crate) fn write_durably(dir: &Path, name: &str, content: &[u8]) -> Result<(), BillingError> {
    use std::io::Write;
    let tmp = dir.join(format!(".tmp-{name}"));
    let path = dir.join(name);
    let mut f = std::fs::File::create(&tmp).map_err(BillingError::io(&tmp))?;
    f.write_all(content).map_err(BillingError::io(&tmp))?;
    f.sync_all().map_err(BillingError::io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(BillingError::io(&path))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), BillingError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(BillingError::io(dir))
}
