//! `make bench`: each figure of ours beside its anchor (the physical or reference limit),
//! one line per figure:
//!
//! `BENCH <id> <what> ours=<n> anchor=<n> unit=<u> ratio=<ours/anchor>`
//!
//! Each bench is a subcommand; `all` runs every one with its defaults. Scratch data goes
//! under the build's target directory so it sits on the same disk as the product's data
//! would (not on a tmpfs).

mod a1;
mod k1;
mod p1;
mod p2;
mod p3;
mod p4;
mod p5;
mod p6;
mod p7;
mod p8;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use passerelle_queue::{NewItem, Queue, QueueConfig};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

#[derive(Debug, Parser)]
#[command(about = "passerelle benchmarks: our figures beside their anchors")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Q1: durable enqueue+lease+ack throughput vs a raw SQLite insert+delete loop.
    Q1(Q1Args),
    /// K1: TLS handshakes/s with a token-held RSA-2048 key vs the same key in memory.
    K1,
    /// A1: p99 of LDAP substring searches over 100 000 entries, ours vs slapd.
    A1,
    /// P1: drain of 10 000 queued 50 KB messages to a real Postfix, ours vs Postfix relaying.
    P1,
    /// P2: submission p99 latency with 50 concurrent clients, ours vs Postfix.
    P2,
    /// P3: encryption of a 10 MB lot, ours vs `openssl cms -encrypt`, and peak RSS.
    P3,
    /// P4: verification of a 10 000-domain signed liste blanche, ours vs `xmlsec1 --verify`.
    P4,
    /// P5: mirror of 5 000 messages from Dovecot, ours vs mbsync.
    P5,
    /// P6: daemon memory with 10 000 queued, idle and draining, vs a Postfix relay.
    P6,
    /// P8: bytes/s written to the inactive slot (hash, fsync, read-back), ours vs dd.
    P8,
    /// P7: card signatures for 100 rights requests, our pooled proxy vs a new TLS connection each.
    P7,
    /// Every bench with its defaults.
    All,
}

#[derive(Debug, Clone, Args)]
struct Q1Args {
    /// Items per round.
    #[arg(long, default_value_t = 2000)]
    items: u32,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// Rounds of each side; the median round is reported.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

impl Default for Q1Args {
    fn default() -> Self {
        Self {
            items: 2000,
            payload: 1024,
            rounds: 3,
        }
    }
}

/// One printed figure.
#[derive(Debug)]
struct Figure {
    id: &'static str,
    what: &'static str,
    ours: f64,
    anchor: f64,
    unit: &'static str,
}

impl std::fmt::Display for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BENCH {} {} ours={:.0} anchor={:.0} unit={} ratio={:.2}",
            self.id,
            self.what,
            self.ours,
            self.anchor,
            self.unit,
            self.ours / self.anchor
        )
    }
}

// Not `#[tokio::main]`: each bench builds the runtime it needs, and a runtime cannot be
// started from within another.
fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let scratch = scratch_root()?;
    let q1_blocking = |args: &Q1Args| -> anyhow::Result<Figure> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(q1(&scratch, args))
    };
    match cli.bench {
        Bench::Q1(args) => println!("{}", q1_blocking(&args)?),
        Bench::K1 => k1::run()?,
        Bench::A1 => a1::run()?,
        Bench::P1 => p1::run()?,
        Bench::P2 => p2::run()?,
        Bench::P3 => p3::run()?,
        Bench::P4 => p4::run()?,
        Bench::P5 => p5::run()?,
        Bench::P6 => p6::run()?,
        Bench::P7 => p7::run()?,
        Bench::P8 => p8::run()?,
        Bench::All => {
            println!("{}", q1_blocking(&Q1Args::default())?);
            k1::run()?;
            a1::run()?;
            p1::run()?;
            p2::run()?;
            p3::run()?;
            p4::run()?;
            p5::run()?;
            p6::run()?;
            p7::run()?;
            p8::run()?;
        }
    }
    Ok(())
}

/// The directory holding this binary (`target/<profile>/`): same disk as the build.
fn scratch_root() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    exe.parent()
        .map(Path::to_path_buf)
        .context("bench binary has no parent directory")
}

async fn q1(scratch: &Path, args: &Q1Args) -> anyhow::Result<Figure> {
    anyhow::ensure!(
        args.items > 0 && args.rounds > 0,
        "items and rounds must be positive"
    );
    let payload = vec![0x5a; args.payload];
    let mut ours = Vec::new();
    let mut anchor = Vec::new();
    // Alternate the sides so that disk state drifts (WAL growth, cache) hit both alike.
    for _ in 0..args.rounds {
        anchor.push(q1_anchor_round(scratch, args.items, &payload).await?);
        ours.push(q1_queue_round(scratch, args.items, &payload).await?);
    }
    Ok(Figure {
        id: "Q1",
        what: "durable-enqueue-ack",
        ours: throughput(args.items, median(&mut ours)),
        anchor: throughput(args.items, median(&mut anchor)),
        unit: "items/s",
    })
}

/// The queue: enqueue every item (one durable commit each), then lease them in batches of
/// 64 and ack each (one durable commit each).
async fn q1_queue_round(scratch: &Path, items: u32, payload: &[u8]) -> anyhow::Result<Duration> {
    let dir = tempfile::Builder::new()
        .prefix("bench-q1-queue-")
        .tempdir_in(scratch)?;
    let queue = Queue::open_sqlite(dir.path(), QueueConfig::default()).await?;
    let lease_for = Duration::from_mins(1);
    let began = Instant::now();
    for i in 0..items {
        queue
            .enqueue(NewItem::new("bench", i.to_string(), payload.to_vec()))
            .await?;
    }
    let mut acked = 0;
    while acked < items {
        let batch = queue.lease("bench", 64, lease_for).await?;
        anyhow::ensure!(!batch.is_empty(), "queue ran dry after {acked} acks");
        for item in &batch {
            queue.ack(item).await?;
            acked += 1;
        }
    }
    Ok(began.elapsed())
}

/// The physical limit: a raw INSERT then DELETE of each row, each its own durable commit,
/// with the queue's pragmas.
async fn q1_anchor_round(scratch: &Path, items: u32, payload: &[u8]) -> anyhow::Result<Duration> {
    let dir = tempfile::Builder::new()
        .prefix("bench-q1-anchor-")
        .tempdir_in(scratch)?;
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("anchor.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        .execute(&pool)
        .await?;
    let began = Instant::now();
    for i in 0..items {
        sqlx::query("INSERT INTO t (id, payload) VALUES (?, ?)")
            .bind(i64::from(i))
            .bind(payload)
            .execute(&pool)
            .await?;
        sqlx::query("DELETE FROM t WHERE id = ?")
            .bind(i64::from(i))
            .execute(&pool)
            .await?;
    }
    let elapsed = began.elapsed();
    pool.close().await;
    Ok(elapsed)
}

fn median(rounds: &mut [Duration]) -> Duration {
    rounds.sort();
    rounds[rounds.len() / 2]
}

fn throughput(items: u32, elapsed: Duration) -> f64 {
    f64::from(items) / elapsed.as_secs_f64()
}
