//! The local cache: one SQLite file per generation, with an FTS5 trigram index
//! (`remove_diacritics 1`) over the searchable fields, and a pointer file naming the
//! current generation.
//!
//! A refresh builds a complete new generation beside the current one, verifies it, then
//! swaps the pointer with an atomic rename: a reader sees either the old cache or the new one,
//! never a mix, and a refused or failed refresh leaves the old one serving
//! (EX_2.1.3_5020). Generations are written once and then only read.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::TryStreamExt as _;
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row as _, SqlitePool};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::entry::Entry;
use crate::error::{AnnuaireError, Result};
use crate::query::Query;

const POINTER: &str = "current";

const SCHEMA: &[&str] = &[
    "CREATE TABLE entry (
        id INTEGER PRIMARY KEY,
        mail TEXT NOT NULL, bal_type TEXT NOT NULL, nom TEXT NOT NULL, prenom TEXT NOT NULL,
        profession TEXT NOT NULL, specialite TEXT NOT NULL, organisation TEXT NOT NULL,
        ville TEXT NOT NULL, code_postal TEXT NOT NULL, raw TEXT NOT NULL)",
    "CREATE VIRTUAL TABLE entry_fts USING fts5(
        mail, bal_type, nom, prenom, profession, specialite, organisation, ville, code_postal,
        content='entry', content_rowid='id', tokenize='trigram remove_diacritics 1')",
    "CREATE TABLE meta (refreshed_at TEXT NOT NULL, entries INTEGER NOT NULL,
        rejected INTEGER NOT NULL, sources TEXT NOT NULL)",
];

const COLUMNS: &str = "e.mail, e.bal_type, e.nom, e.prenom, e.profession, e.specialite, e.organisation, e.ville, e.code_postal";

/// What a refresh tells the cache about the data it brings.
#[derive(Debug, Clone)]
pub struct LoadInfo {
    /// Which sources contributed, for the status page.
    pub sources: String,
    /// Rows rejected by the parsers.
    pub rejected: usize,
    /// Refuse the load when it has fewer entries than this percentage of the current one.
    pub sanity_floor_percent: u8,
}

/// The state of the cache, for the CLI, the web admin and alerting.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStatus {
    #[serde(with = "time::serde::rfc3339")]
    pub refreshed_at: OffsetDateTime,
    pub entries: usize,
    pub rejected: usize,
    pub sources: String,
}

impl CacheStatus {
    /// True when the last good refresh is older than `stale_after`.
    pub fn is_stale(&self, stale_after: Duration) -> bool {
        let age = OffsetDateTime::now_utc() - self.refreshed_at;
        age > time::Duration::try_from(stale_after).unwrap_or(time::Duration::MAX)
    }
}

/// The result of a search: the entries up to the limit, and whether more matched.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Found {
    pub entries: Vec<Entry>,
    pub truncated: bool,
}

#[derive(Debug)]
struct Generation {
    pool: SqlitePool,
    status: CacheStatus,
}

/// The cache directory and its current generation; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    current: RwLock<Option<Arc<Generation>>>,
    /// One refresh at a time in this process (the floor check and the swap go together).
    replacing: tokio::sync::Mutex<()>,
}

impl Cache {
    /// Open (or create) the cache in `dir`; an empty cache has no status and finds nothing.
    pub async fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| AnnuaireError::io(dir, "create cache dir", e))?;
        let pointer = dir.join(POINTER);
        let current = match std::fs::read_to_string(&pointer) {
            Ok(name) => Some(Arc::new(open_generation(&dir.join(name.trim())).await?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(AnnuaireError::io(&pointer, "read cache pointer", e)),
        };
        Ok(Self {
            dir: dir.to_owned(),
            current: RwLock::new(current),
            replacing: tokio::sync::Mutex::new(()),
        })
    }

    fn generation(&self) -> Option<Arc<Generation>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current generation's status, `None` before the first good refresh.
    pub fn status(&self) -> Option<CacheStatus> {
        self.generation().map(|g| g.status.clone())
    }

    /// Build a new generation from `entries`, verify it, and make it current atomically.
    /// On any error the previous generation stays current.
    pub async fn replace(&self, entries: &[Entry], info: &LoadInfo) -> Result<CacheStatus> {
        let _one_at_a_time = self.replacing.lock().await;
        if let Some(old) = self.status() {
            let floor = old.entries * usize::from(info.sanity_floor_percent) / 100;
            if entries.len() < floor {
                return Err(AnnuaireError::BelowSanityFloor {
                    new: entries.len(),
                    previous: old.entries,
                    floor,
                });
            }
        }
        let now = OffsetDateTime::now_utc();
        let name = format!("gen-{}.sqlite", now.unix_timestamp_nanos());
        let path = self.dir.join(&name);
        let status = CacheStatus {
            refreshed_at: now,
            entries: entries.len(),
            rejected: info.rejected,
            sources: info.sources.clone(),
        };
        if let Err(e) = build_generation(&path, entries, &status).await {
            // A half-built generation is never pointed to; remove it so it does not pile up.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let generation = open_generation(&path).await?;
        if generation.status.entries != entries.len() {
            let _ = std::fs::remove_file(&path);
            return Err(AnnuaireError::ExtractionRefused {
                source_name: info.sources.clone(),
                reason: "verification of the new cache failed: entry count differs".to_owned(),
            });
        }
        write_pointer(&self.dir, &name)?;
        let old = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(Arc::new(generation));
        if let Some(old) = old {
            // Searches still holding the old generation finish on it; its file is unlinked
            // now and freed when the last of them drops the pool.
            old.pool.close().await;
        }
        self.remove_stale_generations(&name);
        tracing::info!(entries = status.entries, rejected = status.rejected, sources = %status.sources, "annuaire cache replaced");
        Ok(status)
    }

    /// Remove generations older than `keep`; a newer one may be another refresh still
    /// being built (the CLI and the daemon can both refresh), so it is left alone.
    fn remove_stale_generations(&self, keep: &str) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let Some(kept) = generation_stamp(keep) else {
            return;
        };
        for file in dir.flatten() {
            let name = file.file_name();
            if generation_stamp(&name.to_string_lossy()).is_some_and(|stamp| stamp < kept)
                && let Err(e) = std::fs::remove_file(file.path())
            {
                tracing::warn!(file = %file.path().display(), error = %e, "could not remove an old cache generation");
            }
        }
    }

    /// Entries matching `query`, at most `limit` of them.
    pub async fn search(&self, query: &Query, limit: usize) -> Result<Found> {
        let Some(generation) = self.generation() else {
            return Ok(Found::default());
        };
        if query.is_nothing() {
            return Ok(Found::default());
        }
        let fts = query.fts();
        let sql = if fts.is_some() {
            format!(
                "SELECT {COLUMNS}, e.raw FROM entry_fts JOIN entry e ON e.id = entry_fts.rowid WHERE entry_fts MATCH ?1 ORDER BY e.id"
            )
        } else {
            format!("SELECT {COLUMNS}, e.raw FROM entry e ORDER BY e.id")
        };
        let mut q = sqlx::query(&sql);
        if let Some(fts) = &fts {
            q = q.bind(fts);
        }
        let mut rows = q.fetch(&generation.pool);
        let mut found = Found::default();
        let path = &self.dir;
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(|e| AnnuaireError::cache(path, "search", e))?
        {
            let get = |i: usize| row.try_get::<String, _>(i).unwrap_or_default();
            let mut entry = Entry {
                mail: get(0),
                bal_type: get(1),
                nom: get(2),
                prenom: get(3),
                profession: get(4),
                specialite: get(5),
                organisation: get(6),
                ville: get(7),
                code_postal: get(8),
                raw: serde_json::Value::Null,
            };
            if !query.matches(&entry) {
                continue;
            }
            if found.entries.len() == limit {
                found.truncated = true;
                break;
            }
            // Only matches pay for decoding the raw record.
            entry.raw = serde_json::from_str(&get(9)).unwrap_or_default();
            found.entries.push(entry);
        }
        Ok(found)
    }
}

/// The creation time (ns) in a generation file name `gen-<ns>.sqlite[-suffix]`.
fn generation_stamp(name: &str) -> Option<i128> {
    name.strip_prefix("gen-")?.split('.').next()?.parse().ok()
}

async fn build_generation(path: &Path, entries: &[Entry], status: &CacheStatus) -> Result<()> {
    let err = |context| move |e| AnnuaireError::cache(path, context, e);
    // Durability comes from the fsync before the pointer rename, not from SQLite's journal:
    // an unfinished generation is simply never pointed to.
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Off)
        .synchronous(SqliteSynchronous::Off);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(err("create generation"))?;
    let mut tx = pool.begin().await.map_err(err("begin"))?;
    for statement in SCHEMA {
        sqlx::query(statement)
            .execute(&mut *tx)
            .await
            .map_err(err("create schema"))?;
    }
    for e in entries {
        sqlx::query(
            "INSERT INTO entry (mail, bal_type, nom, prenom, profession, specialite, organisation, ville, code_postal, raw)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .bind(&e.mail)
        .bind(&e.bal_type)
        .bind(&e.nom)
        .bind(&e.prenom)
        .bind(&e.profession)
        .bind(&e.specialite)
        .bind(&e.organisation)
        .bind(&e.ville)
        .bind(&e.code_postal)
        .bind(e.raw.to_string())
        .execute(&mut *tx)
        .await
        .map_err(err("insert entry"))?;
    }
    sqlx::query("INSERT INTO entry_fts(entry_fts) VALUES ('rebuild')")
        .execute(&mut *tx)
        .await
        .map_err(err("build index"))?;
    sqlx::query(
        "INSERT INTO meta (refreshed_at, entries, rejected, sources) VALUES (?1, ?2, ?3, ?4)",
    )
    .bind(
        status
            .refreshed_at
            .format(&Rfc3339)
            .map_err(|e| AnnuaireError::ExtractionRefused {
                source_name: status.sources.clone(),
                reason: format!("refresh time: {e}"),
            })?,
    )
    .bind(i64::try_from(status.entries).unwrap_or(i64::MAX))
    .bind(i64::try_from(status.rejected).unwrap_or(i64::MAX))
    .bind(&status.sources)
    .execute(&mut *tx)
    .await
    .map_err(err("write meta"))?;
    tx.commit().await.map_err(err("commit"))?;
    let check: String = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_one(&pool)
        .await
        .map_err(err("quick_check"))?;
    pool.close().await;
    if check != "ok" {
        return Err(AnnuaireError::ExtractionRefused {
            source_name: status.sources.clone(),
            reason: format!("new cache failed its integrity check: {check}"),
        });
    }
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| AnnuaireError::io(path, "fsync new cache", e))
}

async fn open_generation(path: &Path) -> Result<Generation> {
    let err = |context| move |e| AnnuaireError::cache(path, context, e);
    let options = SqliteConnectOptions::new().filename(path).read_only(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .map_err(err("open generation"))?;
    let row = sqlx::query("SELECT refreshed_at, entries, rejected, sources FROM meta")
        .fetch_one(&pool)
        .await
        .map_err(err("read meta"))?;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM entry")
        .fetch_one(&pool)
        .await
        .map_err(err("count entries"))?;
    let status = CacheStatus {
        refreshed_at: OffsetDateTime::parse(
            &row.try_get::<String, _>(0).map_err(err("read meta"))?,
            &Rfc3339,
        )
        .map_err(|e| AnnuaireError::ExtractionRefused {
            source_name: path.display().to_string(),
            reason: format!("cache meta has a bad refresh time: {e}"),
        })?,
        entries: usize::try_from(count).unwrap_or_default(),
        rejected: usize::try_from(row.try_get::<i64, _>(2).map_err(err("read meta"))?)
            .unwrap_or_default(),
        sources: row.try_get(3).map_err(err("read meta"))?,
    };
    let declared: i64 = row.try_get(1).map_err(err("read meta"))?;
    if declared != count {
        return Err(AnnuaireError::ExtractionRefused {
            source_name: status.sources,
            reason: format!(
                "cache {} holds {count} entries, its meta says {declared}",
                path.display()
            ),
        });
    }
    Ok(Generation { pool, status })
}

fn write_pointer(dir: &Path, name: &str) -> Result<()> {
    let tmp = dir.join(format!("{POINTER}.tmp"));
    let pointer = dir.join(POINTER);
    std::fs::write(&tmp, name)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .map_err(|e| AnnuaireError::io(&tmp, "write cache pointer", e))?;
    std::fs::rename(&tmp, &pointer)
        .map_err(|e| AnnuaireError::io(&pointer, "swap cache pointer", e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AnnuaireError::io(dir, "fsync cache dir", e))
}
