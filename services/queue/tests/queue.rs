//! Behaviour of the queue through its public API, on the SQLite store.

use std::path::Path;
use std::time::{Duration, SystemTime};

use passerelle_queue::{
    ItemState, ListFilter, NewItem, Queue, QueueConfig, QueueError, RetryHint, RetryOutcome,
    SqliteStore,
};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

const LEASE: Duration = Duration::from_secs(30);

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

async fn open(dir: &Path, config: QueueConfig) -> Queue<SqliteStore> {
    Queue::open_sqlite(dir, config).await.expect("open queue")
}

/// A second connection to the queue's database, standing for corruption from outside.
async fn raw(dir: &Path) -> SqlitePool {
    SqlitePool::connect_with(SqliteConnectOptions::new().filename(dir.join("queue.db")))
        .await
        .expect("raw connection")
}

fn payload_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("payloads"))
        .expect("payload dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn duplicate_idempotency_key_is_a_noop() {
    let dir = tempdir();
    let q = open(dir.path(), QueueConfig::default()).await;
    let first = q
        .enqueue(NewItem::new("smtp-out", "<a@b>", b"one".to_vec()))
        .await
        .expect("enqueue");
    assert!(!first.duplicate);
    let again = q
        .enqueue(NewItem::new("smtp-out", "<a@b>", b"other bytes".to_vec()))
        .await
        .expect("re-enqueue");
    assert_eq!(again.id, first.id);
    assert!(again.duplicate);
    // Same key under another kind is another item.
    let other_kind = q
        .enqueue(NewItem::new("smtp-in", "<a@b>", b"one".to_vec()))
        .await
        .expect("enqueue");
    assert!(!other_kind.duplicate);

    let leased = q.lease("smtp-out", 10, LEASE).await.expect("lease");
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].payload(), b"one", "the first payload is kept");
    q.ack(&leased[0]).await.expect("ack");
    // Still a no-op once done: the key is kept until pruning.
    let after_done = q
        .enqueue(NewItem::new("smtp-out", "<a@b>", b"one".to_vec()))
        .await
        .expect("enqueue");
    assert!(after_done.duplicate);
    assert!(
        q.lease("smtp-out", 10, LEASE)
            .await
            .expect("lease")
            .is_empty()
    );
}

#[tokio::test]
async fn acked_item_is_done_and_not_leased_again() {
    let dir = tempdir();
    let q = open(dir.path(), QueueConfig::default()).await;
    let id = q
        .enqueue(NewItem::new("k", "1", b"payload".to_vec()))
        .await
        .expect("enqueue")
        .id;
    let leased = q.lease("k", 10, LEASE).await.expect("lease");
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].attempt(), 1);
    assert_eq!(leased[0].idempotency_key(), "1");
    assert_eq!(
        q.get(id).await.expect("get").expect("row").state,
        ItemState::Leased
    );
    assert!(
        q.lease("k", 10, LEASE).await.expect("lease").is_empty(),
        "a held lease hides the item"
    );
    q.ack(&leased[0]).await.expect("ack");
    let info = q.get(id).await.expect("get").expect("row");
    assert_eq!(info.state, ItemState::Done);
    assert!(info.settled_at.is_some());
    assert!(q.lease("k", 10, LEASE).await.expect("lease").is_empty());
    assert_eq!(q.next_due("k").await.expect("next due"), None);
}

#[tokio::test]
async fn large_payload_goes_to_a_file_removed_after_ack() {
    let dir = tempdir();
    let config = QueueConfig {
        inline_payload_max: 16,
        ..QueueConfig::default()
    };
    let q = open(dir.path(), config).await;
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    q.enqueue(NewItem::new("k", "big", big.clone()))
        .await
        .expect("enqueue");
    assert_eq!(payload_files(dir.path()).len(), 1, "one payload file");
    let dup = q
        .enqueue(NewItem::new("k", "big", big.clone()))
        .await
        .expect("enqueue");
    assert!(dup.duplicate);
    assert_eq!(
        payload_files(dir.path()).len(),
        1,
        "a duplicate writes no file"
    );

    let leased = q.lease("k", 1, LEASE).await.expect("lease");
    assert_eq!(leased[0].payload(), big.as_slice());
    q.ack(&leased[0]).await.expect("ack");
    assert!(
        payload_files(dir.path()).is_empty(),
        "file removed after ack"
    );
}

#[tokio::test]
async fn settling_with_a_lease_taken_over_is_refused() {
    let dir = tempdir();
    let q = open(dir.path(), QueueConfig::default()).await;
    let id = q
        .enqueue(NewItem::new("k", "1", b"x".to_vec()))
        .await
        .expect("enqueue")
        .id;
    let stale = q
        .lease("k", 1, Duration::ZERO)
        .await
        .expect("lease")
        .remove(0);
    // The zero-length lease is already expired: the next consumer takes the item over.
    let fresh = q.lease("k", 1, LEASE).await.expect("lease").remove(0);
    assert_eq!(fresh.id(), id);
    assert_eq!(fresh.attempt(), 2);

    for result in [
        q.ack(&stale).await.err(),
        q.fail_permanent(&stale, "late").await.err(),
        q.retry(&stale, RetryHint::default()).await.err(),
    ] {
        assert!(
            matches!(result, Some(QueueError::LeaseLost { id: lost }) if lost == id),
            "{result:?}"
        );
    }
    assert_eq!(
        q.get(id).await.expect("get").expect("row").state,
        ItemState::Leased,
        "the stale calls changed nothing"
    );
    q.ack(&fresh).await.expect("the holder's ack applies");
    assert!(matches!(
        q.ack(&fresh).await,
        Err(QueueError::LeaseLost { .. })
    ));
}

#[tokio::test]
async fn expired_lease_is_picked_up_again_when_due() {
    let dir = tempdir();
    let q = open(dir.path(), QueueConfig::default()).await;
    q.enqueue(NewItem::new("k", "1", b"x".to_vec()))
        .await
        .expect("enqueue");
    let first = q
        .lease("k", 1, Duration::from_millis(100))
        .await
        .expect("lease")
        .remove(0);
    // The consumer "crashes": it never settles. The queue says when the item is due again.
    let due = q.next_due("k").await.expect("next due").expect("unsettled");
    assert_eq!(due, first.lease_expires_at());
    assert!(q.lease("k", 1, LEASE).await.expect("lease").is_empty());
    if let Ok(wait) = due.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait + Duration::from_millis(5)).await;
    }
    let again = q.lease("k", 1, LEASE).await.expect("lease");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt(), 2);
}

#[tokio::test]
async fn retry_uses_jittered_backoff_and_clamped_retry_after() {
    let dir = tempdir();
    let q = open(dir.path(), QueueConfig::default()).await;
    let id = q
        .enqueue(NewItem::new("k", "1", b"x".to_vec()))
        .await
        .expect("enqueue")
        .id;
    let leased = q.lease("k", 1, LEASE).await.expect("lease").remove(0);
    let before = SystemTime::now();
    let outcome = q
        .retry(
            &leased,
            RetryHint {
                retry_after: None,
                reason: "421 try later".into(),
            },
        )
        .await
        .expect("retry");
    let RetryOutcome::Scheduled { next_attempt_at } = outcome else {
        panic!("not scheduled: {outcome:?}")
    };
    let delay = next_attempt_at
        .duration_since(before)
        .expect("in the future");
    // First retry: ~5 minutes, shortened by at most 10 % jitter.
    assert!(
        delay >= Duration::from_secs(270) && delay <= Duration::from_secs(301),
        "{delay:?}"
    );
    let info = q.get(id).await.expect("get").expect("row");
    assert_eq!(info.state, ItemState::Failed);
    assert_eq!(info.last_error.as_deref(), Some("421 try later"));
    assert!(
        q.lease("k", 1, LEASE).await.expect("lease").is_empty(),
        "not due yet"
    );

    // A peer's Retry-After replaces the backoff, clamped to the 4000 s ceiling.
    let config = QueueConfig {
        first_retry: Duration::ZERO,
        ..QueueConfig::default()
    };
    let dir2 = tempdir();
    let q2 = open(dir2.path(), config).await;
    q2.enqueue(NewItem::new("k", "1", b"x".to_vec()))
        .await
        .expect("enqueue");
    let leased = q2.lease("k", 1, LEASE).await.expect("lease").remove(0);
    let before = SystemTime::now();
    let RetryOutcome::Scheduled { next_attempt_at } = q2
        .retry(
            &leased,
            RetryHint {
                retry_after: Some(Duration::from_hours(24)),
                reason: "503".into(),
            },
        )
        .await
        .expect("retry")
    else {
        panic!("not scheduled")
    };
    let delay = next_attempt_at
        .duration_since(before)
        .expect("in the future");
    assert!(
        delay >= Duration::from_secs(3999) && delay <= Duration::from_secs(4001),
        "{delay:?}"
    );
}

#[tokio::test]
async fn failed_item_is_retried_then_dead_after_its_lifetime() {
    let dir = tempdir();
    let config = QueueConfig {
        first_retry: Duration::ZERO,
        max_retry: Duration::ZERO,
        lifetime: Duration::from_millis(150),
        ..QueueConfig::default()
    };
    let q = open(dir.path(), config).await;
    let id = q
        .enqueue(NewItem::new("k", "1", b"x".to_vec()))
        .await
        .expect("enqueue")
        .id;
    let hint = || RetryHint {
        retry_after: None,
        reason: "timeout".into(),
    };
    let first = q.lease("k", 1, LEASE).await.expect("lease").remove(0);
    assert!(matches!(
        q.retry(&first, hint()).await.expect("retry"),
        RetryOutcome::Scheduled { .. }
    ));
    let second = q.lease("k", 1, LEASE).await.expect("lease").remove(0);
    assert_eq!(second.attempt(), 2);
    // Let the lifetime run out (the item's age is what is measured, not readiness).
    let age_limit = second.created_at() + Duration::from_millis(150);
    if let Ok(wait) = age_limit.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    assert_eq!(
        q.retry(&second, hint()).await.expect("retry"),
        RetryOutcome::Dead
    );
    let info = q.get(id).await.expect("get").expect("row");
    assert_eq!(info.state, ItemState::Dead);
    assert!(
        info.last_error
            .as_deref()
            .is_some_and(|e| e.contains("lifetime") && e.contains("timeout")),
        "{info:?}"
    );
    assert!(q.lease("k", 1, LEASE).await.expect("lease").is_empty());
}

#[tokio::test]
async fn permanent_failure_is_dead_with_its_reason() {
    let dir = tempdir();
    let q = open(dir.path(), QueueConfig::default()).await;
    let id = q
        .enqueue(NewItem::new("k", "1", b"x".to_vec()))
        .await
        .expect("enqueue")
        .id;
    let leased = q.lease("k", 1, LEASE).await.expect("lease").remove(0);
    q.fail_permanent(&leased, "550 5.1.1 no such user")
        .await
        .expect("fail");
    let info = q.get(id).await.expect("get").expect("row");
    assert_eq!(info.state, ItemState::Dead);
    assert_eq!(info.last_error.as_deref(), Some("550 5.1.1 no such user"));
    let dead = q
        .list(&ListFilter {
            state: Some(ItemState::Dead),
            ..ListFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(dead.len(), 1);
}

#[tokio::test]
async fn not_before_delays_leasing() {
    let dir = tempdir();
    let q = open(dir.path(), QueueConfig::default()).await;
    let later = SystemTime::now() + Duration::from_hours(1);
    let mut item = NewItem::new("k", "1", b"x".to_vec());
    item.not_before = Some(later);
    q.enqueue(item).await.expect("enqueue");
    assert!(q.lease("k", 1, LEASE).await.expect("lease").is_empty());
    let due = q.next_due("k").await.expect("next due").expect("due");
    assert!(due.duration_since(later).unwrap_or_default() < Duration::from_millis(2));
}

#[tokio::test]
async fn metrics_report_depth_oldest_age_and_dead_per_kind() {
    let dir = tempdir();
    let q = open(dir.path(), QueueConfig::default()).await;
    for i in 0..3 {
        q.enqueue(NewItem::new("a", i.to_string(), b"x".to_vec()))
            .await
            .expect("enqueue");
    }
    q.enqueue(NewItem::new("b", "1", b"x".to_vec()))
        .await
        .expect("enqueue");
    let leased = q.lease("a", 2, LEASE).await.expect("lease");
    q.ack(&leased[0]).await.expect("ack");
    q.fail_permanent(&leased[1], "bounced").await.expect("fail");
    q.lease("b", 1, LEASE).await.expect("lease");

    let m = q.metrics().await.expect("metrics");
    assert_eq!(m.quarantined, 0);
    assert_eq!(m.kinds.len(), 2);
    let (a, b) = (&m.kinds[0], &m.kinds[1]);
    assert_eq!((a.kind.as_str(), a.depth, a.leased, a.dead), ("a", 1, 0, 1));
    assert_eq!((b.kind.as_str(), b.depth, b.leased, b.dead), ("b", 1, 1, 0));
    assert!(a.oldest_age < Duration::from_mins(1));
}

#[tokio::test]
async fn invalid_input_is_refused_before_storage() {
    let dir = tempdir();
    let config = QueueConfig {
        max_payload: 10,
        ..QueueConfig::default()
    };
    let q = open(dir.path(), config).await;
    let cases = [
        NewItem::new("", "1", b"x".to_vec()),
        NewItem::new("k", "", b"x".to_vec()),
        NewItem::new("k", "a\nb", b"x".to_vec()),
        NewItem::new("k", "x".repeat(1001), b"x".to_vec()),
    ];
    for item in cases {
        assert!(matches!(
            q.enqueue(item).await,
            Err(QueueError::InvalidInput { .. })
        ));
    }
    assert!(matches!(
        q.enqueue(NewItem::new("k", "1", vec![0; 11])).await,
        Err(QueueError::PayloadTooLarge { len: 11, max: 10 })
    ));
    assert!(q.metrics().await.expect("metrics").kinds.is_empty());
}

#[tokio::test]
async fn corrupt_inline_payload_is_quarantined_while_others_flow() {
    let dir = tempdir();
    let q = open(dir.path(), QueueConfig::default()).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            q.enqueue(NewItem::new("k", i.to_string(), b"hello".to_vec()))
                .await
                .expect("enqueue")
                .id,
        );
    }
    let pool = raw(dir.path()).await;
    sqlx::query("UPDATE items SET payload = x'68656c6c30' WHERE id = ?")
        .bind(ids[1].0)
        .execute(&pool)
        .await
        .expect("corrupt");

    let leased = q.lease("k", 10, LEASE).await.expect("lease");
    let keys: Vec<&str> = leased
        .iter()
        .map(passerelle_queue::Leased::idempotency_key)
        .collect();
    assert_eq!(keys, ["0", "2"]);
    for l in &leased {
        q.ack(l).await.expect("ack");
    }
    assert!(q.get(ids[1]).await.expect("get").is_none(), "moved aside");
    let quarantined = q.quarantined(10).await.expect("quarantine");
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].item_id, Some(ids[1]));
    assert_eq!(quarantined[0].idempotency_key.as_deref(), Some("1"));
    assert!(quarantined[0].reason.contains("SHA-256"));
    assert_eq!(q.metrics().await.expect("metrics").quarantined, 1);
}

#[tokio::test]
async fn truncated_payload_file_is_quarantined_while_others_flow() {
    let dir = tempdir();
    let config = QueueConfig {
        inline_payload_max: 8,
        ..QueueConfig::default()
    };
    let q = open(dir.path(), config).await;
    q.enqueue(NewItem::new("k", "file", vec![7; 4096]))
        .await
        .expect("enqueue");
    q.enqueue(NewItem::new("k", "inline", b"ok".to_vec()))
        .await
        .expect("enqueue");
    let files = payload_files(dir.path());
    assert_eq!(files.len(), 1);
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("payloads").join(&files[0]))
        .and_then(|f| f.set_len(100))
        .expect("truncate");

    let leased = q.lease("k", 10, LEASE).await.expect("lease");
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].idempotency_key(), "inline");
    q.ack(&leased[0]).await.expect("ack");
    let quarantined = q.quarantined(10).await.expect("quarantine");
    assert_eq!(quarantined.len(), 1);
    assert!(
        quarantined[0].reason.contains("100 bytes"),
        "{quarantined:?}"
    );
    // The quarantined row's file is kept for inspection, also across a reopen's sweep.
    drop(q);
    let q = open(dir.path(), QueueConfig::default()).await;
    assert_eq!(payload_files(dir.path()), files);
    assert_eq!(q.metrics().await.expect("metrics").quarantined, 1);
}

#[tokio::test]
async fn rows_with_invalid_columns_are_quarantined_at_open() {
    let dir = tempdir();
    let q = open(dir.path(), QueueConfig::default()).await;
    for key in ["good", "bad-state", "bad-attempts", "bad-kind", "bad-sum"] {
        q.enqueue(NewItem::new("k", key, b"x".to_vec()))
            .await
            .expect("enqueue");
    }
    drop(q);
    let pool = raw(dir.path()).await;
    for sql in [
        "UPDATE items SET state = 'exploded' WHERE idempotency_key = 'bad-state'",
        "UPDATE items SET attempts = 'many' WHERE idempotency_key = 'bad-attempts'",
        "UPDATE items SET kind = x'ff00' WHERE idempotency_key = 'bad-kind'",
        "UPDATE items SET payload_sha256 = x'00' WHERE idempotency_key = 'bad-sum'",
    ] {
        sqlx::query(sql).execute(&pool).await.expect("corrupt");
    }
    pool.close().await;

    let q = open(dir.path(), QueueConfig::default()).await;
    let mut reasons: Vec<String> = q
        .quarantined(10)
        .await
        .expect("quarantine")
        .into_iter()
        .map(|e| e.reason)
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "attempts is not a small integer",
            "kind is not a non-empty text",
            "payload checksum is not 32 bytes",
            "unknown state",
        ]
    );
    let leased = q.lease("k", 10, LEASE).await.expect("lease");
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].idempotency_key(), "good");
}

#[tokio::test]
async fn orphan_payload_files_are_swept_at_open() {
    let dir = tempdir();
    let config = QueueConfig {
        inline_payload_max: 8,
        ..QueueConfig::default()
    };
    let q = open(dir.path(), config.clone()).await;
    q.enqueue(NewItem::new("k", "kept", vec![1; 64]))
        .await
        .expect("enqueue");
    drop(q);
    let kept = payload_files(dir.path());
    // What a crash leaves: a half-written temp file and a renamed file whose row never
    // committed. A file that is not the queue's is left alone.
    let payloads = dir.path().join("payloads");
    std::fs::write(
        payloads.join(".tmp-0123456789abcdef0123456789abcdef.payload"),
        b"half",
    )
    .expect("write");
    std::fs::write(
        payloads.join("0123456789abcdef0123456789abcdef.payload"),
        b"orphan",
    )
    .expect("write");
    std::fs::write(payloads.join("README"), b"operator note").expect("write");

    let q = open(dir.path(), config).await;
    let mut expected = kept.clone();
    expected.push("README".to_owned());
    expected.sort();
    assert_eq!(payload_files(dir.path()), expected);
    let leased = q.lease("k", 1, LEASE).await.expect("lease");
    assert_eq!(leased[0].payload(), [1; 64]);
}

#[tokio::test]
async fn done_items_are_pruned_after_retention_and_their_key_forgotten() {
    let dir = tempdir();
    let config = QueueConfig {
        done_retention: Duration::ZERO,
        ..QueueConfig::default()
    };
    let q = open(dir.path(), config).await;
    q.enqueue(NewItem::new("k", "1", b"x".to_vec()))
        .await
        .expect("enqueue");
    q.enqueue(NewItem::new("k", "2", b"x".to_vec()))
        .await
        .expect("enqueue");
    let leased = q.lease("k", 1, LEASE).await.expect("lease").remove(0);
    q.ack(&leased).await.expect("ack");
    // Settled strictly before "now - 0": wait out the millisecond clock tick.
    let settled = SystemTime::now();
    while SystemTime::now()
        .duration_since(settled)
        .unwrap_or_default()
        < Duration::from_millis(2)
    {
        tokio::task::yield_now().await;
    }
    assert_eq!(q.prune_done().await.expect("prune"), 1);
    assert!(q.get(leased.id()).await.expect("get").is_none());
    let again = q
        .enqueue(NewItem::new("k", "1", b"x".to_vec()))
        .await
        .expect("enqueue");
    assert!(!again.duplicate, "a pruned key is new again");
    assert_eq!(
        q.list(&ListFilter::default()).await.expect("list").len(),
        2,
        "the live item is untouched"
    );
}

#[test]
fn config_reads_humantime_durations_and_rejects_unknown_fields() {
    let config: QueueConfig = toml::from_str(
        r#"
        first_retry = "10m"
        lifetime = "3days"
        inline_payload_max = 1024
        "#,
    )
    .expect("parse");
    assert_eq!(config.first_retry, Duration::from_mins(10));
    assert_eq!(config.lifetime, Duration::from_hours(72));
    assert_eq!(config.inline_payload_max, 1024);
    assert_eq!(config.max_retry, QueueConfig::default().max_retry);
    let defaults = QueueConfig::default();
    assert_eq!(defaults.first_retry, Duration::from_mins(5));
    assert!(defaults.max_retry >= Duration::from_hours(1));
    assert_eq!(defaults.lifetime, Duration::from_hours(120));
    assert!(toml::from_str::<QueueConfig>("fist_retry = \"1m\"").is_err());
}

/// Concurrent enqueues are committed together (group commit): every key offered twice at
/// once ends up stored exactly once, both callers get the same id, and it survives a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_commit_together_each_key_once() {
    let dir = tempdir();
    let q = open(dir.path(), QueueConfig::default()).await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..400_u32 {
        let q = q.clone();
        tasks.spawn(async move {
            let key = format!("<{}@cabinet>", n % 200);
            let outcome = q
                .enqueue(NewItem::new("smtp-out", &key, n.to_be_bytes().to_vec()))
                .await
                .expect("enqueue");
            (key, outcome)
        });
    }
    let mut by_key = std::collections::HashMap::new();
    let mut duplicates = 0;
    while let Some(done) = tasks.join_next().await {
        let (key, outcome) = done.expect("task");
        duplicates += usize::from(outcome.duplicate);
        let id = *by_key.entry(key).or_insert(outcome.id);
        assert_eq!(id, outcome.id, "both offers of a key answer the same id");
    }
    assert_eq!(by_key.len(), 200);
    assert_eq!(duplicates, 200);
    drop(q);

    let q = open(dir.path(), QueueConfig::default()).await;
    let stored = q
        .list(&ListFilter {
            limit: 1000,
            ..ListFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(stored.len(), 200);
}

/// One insert the database refuses inside a group commit fails alone: its neighbours in the
/// same batch are stored and acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_insert_does_not_fail_its_batch() {
    let dir = tempdir();
    let q = open(dir.path(), QueueConfig::default()).await;
    let pool = raw(dir.path()).await;
    sqlx::query(
        "CREATE TRIGGER poison BEFORE INSERT ON items WHEN NEW.idempotency_key = '<poison>' \
         BEGIN SELECT RAISE(ABORT, 'poisoned row'); END",
    )
    .execute(&pool)
    .await
    .expect("trigger");
    pool.close().await;

    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..100_u32 {
        let q = q.clone();
        tasks.spawn(async move {
            let key = if n == 50 {
                "<poison>".to_owned()
            } else {
                format!("<{n}@cabinet>")
            };
            (n, q.enqueue(NewItem::new("smtp-out", &key, vec![1])).await)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (n, outcome) = done.expect("task");
        if n == 50 {
            let error = outcome.expect_err("the poisoned insert is refused");
            assert!(error.to_string().contains("insert"), "{error}");
        } else {
            assert!(!outcome.expect("neighbour stored").duplicate);
        }
    }
    let stored = q
        .list(&ListFilter {
            limit: 1000,
            ..ListFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(stored.len(), 99);
}
