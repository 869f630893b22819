//! The web admin's own SQLite database: setup state, accounts, sessions, login failures, audit
//! log and queue samples.

use std::path::Path;
use std::str::FromStr as _;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Row as _, SqliteConnection};

use crate::error::{Result, WebadminError};

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[derive(Clone, Debug)]
pub struct Db {
    pool: SqlitePool,
}

/// A live session row.
#[derive(Clone, Debug)]
pub struct SessionRow {
    pub user: String,
    pub csrf: String,
}

/// One audit log line.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: String,
    pub address: String,
    pub action: String,
    pub detail: String,
    pub outcome: String,
}

/// Filters of the Journal page.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since: Option<i64>,
}

/// One queue sample.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: i64,
    pub kind: String,
    pub depth: i64,
    pub oldest_secs: i64,
}

/// What the first-run setup recorded (the account is in `users`).
#[derive(Clone, Debug)]
pub struct SetupRecord {
    pub profile: String,
    pub network: String,
    pub ntp: String,
}

impl Db {
    pub async fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| WebadminError::Io {
            context: format!("create {}", dir.display()),
            source,
        })?;
        let path = dir.join("webadmin.sqlite");
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| WebadminError::Database {
                path: path.clone(),
                source,
            })?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| WebadminError::Database { path, source })?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    pub async fn setup(&self) -> Result<Option<SetupRecord>> {
        let row = sqlx::query("SELECT profile, network, ntp FROM setup WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| SetupRecord {
            profile: r.get(0),
            network: r.get(1),
            ntp: r.get(2),
        }))
    }

    /// Records the setup and its admin account in one transaction; false when a setup was
    /// already done (a second concurrent setup loses).
    pub async fn complete_setup(
        &self,
        record: &SetupRecord,
        user: &str,
        phc: &str,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "INSERT INTO setup (id, done_at, profile, network, ntp) VALUES (1, ?1, ?2, ?3, ?4) ON CONFLICT(id) DO NOTHING",
        )
        .bind(now())
        .bind(&record.profile)
        .bind(&record.network)
        .bind(&record.ntp)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        insert_user(&mut tx, user, phc).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn user_phc(&self, name: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT phc FROM users WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn create_session(
        &self,
        id_hash: &str,
        user: &str,
        csrf: &str,
        expires_at: i64,
    ) -> Result<()> {
        let now = now();
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_name, csrf, created_at, last_seen, expires_at) VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
        )
        .bind(id_hash)
        .bind(user)
        .bind(csrf)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session if it has neither expired nor been idle longer than `idle_secs`; touches it.
    pub async fn session(&self, id_hash: &str, idle_secs: i64) -> Result<Option<SessionRow>> {
        let now = now();
        let row = sqlx::query(
            "UPDATE sessions SET last_seen = ?2 WHERE id_hash = ?1 AND expires_at > ?2 AND last_seen > ?3 RETURNING user_name, csrf",
        )
        .bind(id_hash)
        .bind(now)
        .bind(now - idle_secs)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| SessionRow {
            user: r.get(0),
            csrf: r.get(1),
        }))
    }

    /// Whether the session is still valid, without counting this check as activity (the live
    /// status stream must not keep an idle session open).
    pub async fn session_alive(&self, id_hash: &str, idle_secs: i64) -> Result<bool> {
        let now = now();
        let alive: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM sessions WHERE id_hash = ?1 AND expires_at > ?2 AND last_seen > ?3",
        )
        .bind(id_hash)
        .bind(now)
        .bind(now - idle_secs)
        .fetch_optional(&self.pool)
        .await?;
        Ok(alive.is_some())
    }

    pub async fn delete_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = ?1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Seconds left on a lockout of `subject`, if any.
    pub async fn locked_for(&self, subject: &str) -> Result<Option<i64>> {
        let until: Option<i64> =
            sqlx::query_scalar("SELECT until FROM lockouts WHERE subject = ?1")
                .bind(subject)
                .fetch_optional(&self.pool)
                .await?;
        let now = now();
        Ok(until.filter(|u| *u > now).map(|u| u - now))
    }

    /// Records a failure; locks `subject` for `lock_secs` when it reaches `max` within
    /// `window_secs`. Returns true when it is now locked.
    pub async fn record_failure(
        &self,
        subject: &str,
        max: u32,
        window_secs: i64,
        lock_secs: i64,
    ) -> Result<bool> {
        let now = now();
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM login_failures WHERE at <= ?1")
            .bind(now - window_secs)
            .execute(&mut *tx)
            .await?;
        // Names typed at the login form are arbitrary: expired lockouts go too.
        sqlx::query("DELETE FROM lockouts WHERE until <= ?1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO login_failures (subject, at) VALUES (?1, ?2)")
            .bind(subject)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM login_failures WHERE subject = ?1")
                .bind(subject)
                .fetch_one(&mut *tx)
                .await?;
        let locked = count >= i64::from(max);
        if locked {
            sqlx::query(
                "INSERT INTO lockouts (subject, until) VALUES (?1, ?2) ON CONFLICT(subject) DO UPDATE SET until = excluded.until",
            )
            .bind(subject)
            .bind(now + lock_secs)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM login_failures WHERE subject = ?1")
                .bind(subject)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(locked)
    }

    pub async fn clear_failures(&self, subject: &str) -> Result<()> {
        sqlx::query("DELETE FROM login_failures WHERE subject = ?1")
            .bind(subject)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn audit(&self, entry: &AuditEntry) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit (at, actor, address, action, detail, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(entry.at)
        .bind(&entry.actor)
        .bind(&entry.address)
        .bind(&entry.action)
        .bind(&entry.detail)
        .bind(&entry.outcome)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn audit_entries(&self, filter: &AuditFilter, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT at, actor, address, action, detail, outcome FROM audit
             WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR action = ?2) AND (?3 IS NULL OR at >= ?3)
             ORDER BY id DESC LIMIT ?4",
        )
        .bind(filter.actor.as_deref())
        .bind(filter.action.as_deref())
        .bind(filter.since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                at: r.get(0),
                actor: r.get(1),
                address: r.get(2),
                action: r.get(3),
                detail: r.get(4),
                outcome: r.get(5),
            })
            .collect())
    }

    pub async fn record_samples(&self, samples: &[Sample]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for s in samples {
            sqlx::query(
                "INSERT INTO queue_samples (at, kind, depth, oldest_secs) VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(s.at)
            .bind(&s.kind)
            .bind(s.depth)
            .bind(s.oldest_secs)
            .execute(&mut *tx)
            .await?;
        }
        // Only the charts' 24 h are kept.
        sqlx::query("DELETE FROM queue_samples WHERE at < ?1")
            .bind(now() - 86_400)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn samples_since(&self, since: i64) -> Result<Vec<Sample>> {
        let rows = sqlx::query(
            "SELECT at, kind, depth, oldest_secs FROM queue_samples WHERE at >= ?1 ORDER BY kind, at",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Sample {
                at: r.get(0),
                kind: r.get(1),
                depth: r.get(2),
                oldest_secs: r.get(3),
            })
            .collect())
    }
}

/// One line of the update history.
#[derive(Clone, Debug)]
pub struct UpdateEvent {
    pub at: i64,
    pub event: String,
    pub detail: String,
}

impl Db {
    pub async fn record_update_event(&self, event: &str, detail: &str) -> Result<()> {
        sqlx::query("INSERT INTO update_history (at, event, detail) VALUES (?1, ?2, ?3)")
            .bind(now())
            .bind(event)
            .bind(detail)
            .execute(&self.pool)
            .await?;
        // The page shows the recent attempts; older lines go.
        sqlx::query(
            "DELETE FROM update_history WHERE id <= (SELECT MAX(id) FROM update_history) - 1000",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn update_events(&self, limit: i64) -> Result<Vec<UpdateEvent>> {
        let rows =
            sqlx::query("SELECT at, event, detail FROM update_history ORDER BY id DESC LIMIT ?1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|r| UpdateEvent {
                at: r.get(0),
                event: r.get(1),
                detail: r.get(2),
            })
            .collect())
    }
}

async fn insert_user(conn: &mut SqliteConnection, name: &str, phc: &str) -> Result<()> {
    sqlx::query("INSERT INTO users (name, phc, created_at) VALUES (?1, ?2, ?3)")
        .bind(name)
        .bind(phc)
        .bind(now())
        .execute(conn)
        .await?;
    Ok(())
}
