//! Crash safety under SIGKILL: a child process enqueues and acks 10 000 items while the
//! parent kills it at random moments, at least 200 times, restarting it each time.
//!
//! The child is this very test, re-executed (same binary, `--exact` on its own name) with
//! `CHILD_DIR_ENV` set, which switches it to the child's role. It prints `ENQ <i>` only after `enqueue`
//! returned (the producer's acknowledgement), `DELIVER <i>` as the consumer's side effect,
//! and `ACK <i>` after the ack returned. Pipe writes of a line are atomic, so the parent
//! sees exactly the lines printed before each kill.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use passerelle_queue::{NewItem, Queue, QueueConfig, QueueError};
use sqlx::Row;

const CHILD_DIR_ENV: &str = "PASSERELLE_QUEUE_CRASH_CHILD_DIR";
const CHILD_START_ENV: &str = "PASSERELLE_QUEUE_CRASH_CHILD_START";
const ITEMS: u32 = 10_000;
const KILLS: u32 = 200;
const KIND: &str = "crash";
const LEASE: Duration = Duration::from_millis(300);
/// Every 50th payload is above the inline threshold, so file payloads crash too.
const INLINE_MAX: u64 = 512;

fn config() -> QueueConfig {
    QueueConfig {
        inline_payload_max: INLINE_MAX,
        ..QueueConfig::default()
    }
}

fn key(i: u32) -> String {
    format!("item-{i}")
}

fn payload(i: u32) -> Vec<u8> {
    let len = if i.is_multiple_of(50) { 2048 } else { 64 };
    format!("payload of item {i} ")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(len)
        .collect()
}

/// The child's role: enqueue from `start`, lease and ack, until killed or done.
fn crash_child(dir: String) {
    let start: u32 = std::env::var(CHILD_START_ENV)
        .expect("start index")
        .parse()
        .expect("start index is a number");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(child_main(PathBuf::from(dir), start));
}

async fn child_main(dir: PathBuf, start: u32) {
    let queue = Arc::new(Queue::open_sqlite(&dir, config()).await.expect("open"));
    println!("READY");
    let all_enqueued = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(tokio::sync::Notify::new());

    let producer = {
        let (queue, all_enqueued, wake) = (
            Arc::clone(&queue),
            Arc::clone(&all_enqueued),
            Arc::clone(&wake),
        );
        tokio::spawn(async move {
            for i in start..ITEMS {
                let outcome = queue
                    .enqueue(NewItem::new(KIND, key(i), payload(i)))
                    .await
                    .expect("enqueue");
                println!("ENQ {i}{}", if outcome.duplicate { " dup" } else { "" });
                wake.notify_one();
            }
            all_enqueued.store(true, Ordering::SeqCst);
            wake.notify_one();
        })
    };

    loop {
        let batch = queue.lease(KIND, 32, LEASE).await.expect("lease");
        if batch.is_empty() {
            let due = queue.next_due(KIND).await.expect("next due");
            if due.is_none() && all_enqueued.load(Ordering::SeqCst) {
                break;
            }
            // Wait for the producer, or for the earliest lease left by a killed
            // predecessor to expire, whichever comes first.
            let until_due = due.map_or(Duration::from_secs(1), |t| {
                t.duration_since(SystemTime::now()).unwrap_or_default()
            });
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(until_due) => {}
            }
            continue;
        }
        for item in batch {
            let i: u32 = item
                .idempotency_key()
                .strip_prefix("item-")
                .and_then(|n| n.parse().ok())
                .expect("key");
            assert_eq!(item.payload(), payload(i).as_slice(), "payload of {i}");
            println!("DELIVER {i}");
            match queue.ack(&item).await {
                Ok(()) => println!("ACK {i}"),
                // Only if a lease outlived its 300 ms; the item is delivered again.
                Err(QueueError::LeaseLost { .. }) => println!("LOST {i}"),
                Err(e) => panic!("ack {i}: {e}"),
            }
        }
    }
    producer.await.expect("producer");
    println!("CHILD DONE");
}

/// What the parent learnt from the children's output.
#[derive(Debug, Default)]
struct Log {
    next_start: u32,
    enqueued: Vec<bool>,
    delivered: HashMap<u32, u32>,
    acked: HashMap<u32, u32>,
    duplicate_enqueues: u32,
    lost_leases: u32,
}

impl Log {
    fn read(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        let (Some(what), Some(Ok(i))) = (words.next(), words.next().map(str::parse::<u32>)) else {
            return;
        };
        match what {
            "ENQ" => {
                self.enqueued[i as usize] = true;
                self.next_start = self.next_start.max(i + 1);
                if words.next() == Some("dup") {
                    self.duplicate_enqueues += 1;
                }
            }
            "DELIVER" => *self.delivered.entry(i).or_default() += 1,
            "ACK" => *self.acked.entry(i).or_default() += 1,
            "LOST" => self.lost_leases += 1,
            _ => {}
        }
    }
}

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
}

fn spawn_child(dir: &Path, start: u32, stderr: &Path) -> Running {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "acknowledged_enqueues_survive_200_sigkills_exactly_once",
            "--nocapture",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_START_ENV, start.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).expect("stderr file"))
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        lines,
        reader,
    }
}

fn child_failed(stderr: &Path, status: std::process::ExitStatus) -> ! {
    let err = std::fs::read_to_string(stderr).unwrap_or_default();
    panic!("child failed on its own ({status}):\n{err}");
}

#[test]
fn acknowledged_enqueues_survive_200_sigkills_exactly_once() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        crash_child(dir);
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let db_dir = dir.path().join("queue");
    let stderr = dir.path().join("child.stderr");
    let seed = fastrand::u64(..);
    println!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let began = Instant::now();
    let mut log = Log {
        enqueued: vec![false; ITEMS as usize],
        ..Log::default()
    };

    let mut kills = 0;
    while kills < KILLS {
        let mut run = spawn_child(&db_dir, log.next_start, &stderr);
        // One kill in five lands anywhere in start-up (open, migrations, recovery); the
        // others at a random point of the work, once the queue is open.
        let during_startup = rng.u8(..5) == 0;
        if !during_startup {
            let ready = loop {
                match run.lines.recv_timeout(Duration::from_secs(30)) {
                    Ok(line) if line == "READY" => break true,
                    Ok(line) => log.read(&line),
                    Err(_) => break false,
                }
            };
            assert!(ready, "child never became ready");
        }
        std::thread::sleep(Duration::from_micros(rng.u64(..40_000)));
        if let Some(status) = run.child.try_wait().expect("try_wait") {
            if !status.success() {
                child_failed(&stderr, status);
            }
            panic!("all work finished after only {kills} kills; the kill delays are too long");
        }
        run.child.kill().expect("SIGKILL");
        run.child.wait().expect("reap");
        kills += 1;
        run.reader.join().expect("reader");
        for line in run.lines.try_iter() {
            log.read(&line);
        }
    }
    let killed_at = log.next_start;

    // The last child runs to completion.
    let mut run = spawn_child(&db_dir, log.next_start, &stderr);
    let status = run.child.wait().expect("final child");
    if !status.success() {
        child_failed(&stderr, status);
    }
    run.reader.join().expect("reader");
    let mut finished = false;
    for line in run.lines.try_iter() {
        finished |= line == "CHILD DONE";
        log.read(&line);
    }
    assert!(finished, "final child did not finish its work");

    let duplicates = log.delivered.values().filter(|&&n| n > 1).count();
    println!(
        "kills={kills} enqueued_before_last_kill={killed_at} duplicate_enqueues={} \
         duplicate_deliveries={duplicates} lost_leases={} elapsed={:?}",
        log.duplicate_enqueues,
        log.lost_leases,
        began.elapsed()
    );

    // Every acknowledged enqueue is present exactly once, done; nothing dead or quarantined.
    assert!(
        log.enqueued.iter().all(|&e| e),
        "every item was acknowledged"
    );
    let rows = stored_rows(&db_dir);
    let mut per_key: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for row in &rows {
        per_key
            .entry(row.get("idempotency_key"))
            .or_default()
            .push((row.get("state"), row.get("n")));
    }
    assert_eq!(per_key.len(), ITEMS as usize, "no item missing, none extra");
    for i in 0..ITEMS {
        let entry = &per_key[&key(i)];
        assert_eq!(entry, &[("done".to_owned(), 1)], "item {i}");
        assert!(
            log.delivered.get(&i).copied().unwrap_or(0) >= 1,
            "item {i} delivered"
        );
        assert!(
            log.acked.get(&i).copied().unwrap_or(0) <= 1,
            "item {i} acked twice"
        );
    }
    let files = std::fs::read_dir(db_dir.join("payloads"))
        .expect("payloads")
        .count();
    assert_eq!(files, 0, "no payload file left behind");
}

/// `(idempotency_key, state, n)` of every stored row, after checking through the API that
/// nothing is live, dead or quarantined.
fn stored_rows(db_dir: &Path) -> Vec<sqlx::sqlite::SqliteRow> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let queue = Queue::open_sqlite(db_dir, config()).await.expect("open");
            let metrics = queue.metrics().await.expect("metrics");
            assert_eq!(metrics.quarantined, 0, "nothing quarantined");
            assert!(
                metrics.kinds.is_empty(),
                "nothing live or dead: {metrics:?}"
            );
            let pool = sqlx::SqlitePool::connect_with(
                sqlx::sqlite::SqliteConnectOptions::new().filename(db_dir.join("queue.db")),
            )
            .await
            .expect("raw connection");
            sqlx::query("SELECT idempotency_key, state, COUNT(*) AS n FROM items GROUP BY 1, 2")
                .fetch_all(&pool)
                .await
                .expect("rows")
        })
}
