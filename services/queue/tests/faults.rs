//! Storage failures injected through the `Store` seam: a failed commit is never reported
//! as success, and leaves nothing behind that a later open would mistake for an item.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use passerelle_queue::store::{InsertOutcome, LeasedRow, NewRow, UndecodableRow};
use passerelle_queue::{
    ItemId, ItemInfo, ItemState, ListFilter, NewItem, QuarantineEntry, Queue, QueueConfig,
    QueueError, QueueMetrics, SqliteStore, Store,
};

/// Which commits fail.
#[derive(Debug, Default)]
struct Faults {
    insert: AtomicBool,
    complete: AtomicBool,
}

/// A store whose chosen commits fail as a full disk would.
#[derive(Debug, Clone)]
struct FaultyStore {
    inner: SqliteStore,
    faults: Arc<Faults>,
}

fn injected(op: &'static str) -> QueueError {
    QueueError::Storage {
        op,
        source: sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "injected: disk full at commit",
        )),
    }
}

impl Store for FaultyStore {
    async fn insert(&self, row: NewRow<'_>) -> Result<InsertOutcome, QueueError> {
        if self.faults.insert.load(Ordering::SeqCst) {
            return Err(injected("insert item"));
        }
        self.inner.insert(row).await
    }
    async fn find_key(&self, kind: &str, key: &str) -> Result<Option<ItemId>, QueueError> {
        self.inner.find_key(kind, key).await
    }
    async fn lease(
        &self,
        kind: &str,
        now_ms: i64,
        until_ms: i64,
        max: u32,
    ) -> Result<Vec<Result<LeasedRow, UndecodableRow>>, QueueError> {
        self.inner.lease(kind, now_ms, until_ms, max).await
    }
    async fn complete(&self, id: ItemId, lease_gen: i64, now_ms: i64) -> Result<bool, QueueError> {
        if self.faults.complete.load(Ordering::SeqCst) {
            return Err(injected("ack item"));
        }
        self.inner.complete(id, lease_gen, now_ms).await
    }
    async fn reschedule(
        &self,
        id: ItemId,
        lease_gen: i64,
        next_ms: i64,
        reason: &str,
    ) -> Result<bool, QueueError> {
        self.inner.reschedule(id, lease_gen, next_ms, reason).await
    }
    async fn bury(
        &self,
        id: ItemId,
        lease_gen: i64,
        now_ms: i64,
        reason: &str,
    ) -> Result<bool, QueueError> {
        self.inner.bury(id, lease_gen, now_ms, reason).await
    }
    async fn quarantine(&self, id: ItemId, reason: &str, now_ms: i64) -> Result<bool, QueueError> {
        self.inner.quarantine(id, reason, now_ms).await
    }
    async fn find_invalid(&self) -> Result<Vec<UndecodableRow>, QueueError> {
        self.inner.find_invalid().await
    }
    async fn referenced_payload_files(&self) -> Result<Vec<String>, QueueError> {
        self.inner.referenced_payload_files().await
    }
    async fn next_due(&self, kind: &str) -> Result<Option<i64>, QueueError> {
        self.inner.next_due(kind).await
    }
    async fn metrics(&self, now_ms: i64) -> Result<QueueMetrics, QueueError> {
        self.inner.metrics(now_ms).await
    }
    async fn get(&self, id: ItemId) -> Result<Option<ItemInfo>, QueueError> {
        self.inner.get(id).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<ItemInfo>, QueueError> {
        self.inner.list(filter).await
    }
    async fn quarantined(&self, limit: u32) -> Result<Vec<QuarantineEntry>, QueueError> {
        self.inner.quarantined(limit).await
    }
    async fn prune_done(&self, before_ms: i64) -> Result<u64, QueueError> {
        self.inner.prune_done(before_ms).await
    }
}

async fn faulty(dir: &Path, config: QueueConfig) -> (Queue<FaultyStore>, Arc<Faults>) {
    let inner = SqliteStore::open(&dir.join("queue.db"), Duration::from_secs(5))
        .await
        .expect("open store");
    let faults = Arc::new(Faults::default());
    let store = FaultyStore {
        inner,
        faults: Arc::clone(&faults),
    };
    let queue = Queue::with_store(store, dir.join("payloads"), config)
        .await
        .expect("open queue");
    (queue, faults)
}

fn file_count(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("payloads"))
        .expect("payload dir")
        .count()
}

#[tokio::test]
async fn failed_commit_makes_enqueue_fail_and_leaves_no_item_or_file() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let config = QueueConfig {
        inline_payload_max: 8,
        ..QueueConfig::default()
    };
    let (q, faults) = faulty(dir.path(), config.clone()).await;
    faults.insert.store(true, Ordering::SeqCst);

    for payload in [b"small".to_vec(), vec![9; 4096]] {
        let err = q
            .enqueue(NewItem::new("k", "lost", payload))
            .await
            .expect_err("a failed commit must not report success");
        assert!(err.is_retryable(), "{err}");
    }
    assert_eq!(
        file_count(dir.path()),
        0,
        "the large payload's file is removed"
    );
    drop(q);

    // The producer never got an ack, so it offers the item again; now it is new.
    let q = Queue::open_sqlite(dir.path(), config)
        .await
        .expect("reopen");
    assert!(
        q.list(&ListFilter::default())
            .await
            .expect("list")
            .is_empty()
    );
    let outcome = q
        .enqueue(NewItem::new("k", "lost", vec![9; 4096]))
        .await
        .expect("enqueue");
    assert!(!outcome.duplicate);
}

#[tokio::test]
async fn failed_ack_commit_leaves_the_item_to_be_delivered_again() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let (q, faults) = faulty(dir.path(), QueueConfig::default()).await;
    let id = q
        .enqueue(NewItem::new("k", "1", b"x".to_vec()))
        .await
        .expect("enqueue")
        .id;
    let leased = q
        .lease("k", 1, Duration::ZERO)
        .await
        .expect("lease")
        .remove(0);
    faults.complete.store(true, Ordering::SeqCst);
    assert!(matches!(
        q.ack(&leased).await,
        Err(QueueError::Storage { op: "ack item", .. })
    ));
    faults.complete.store(false, Ordering::SeqCst);

    assert_eq!(
        q.get(id).await.expect("get").expect("row").state,
        ItemState::Leased
    );
    let again = q
        .lease("k", 1, Duration::from_secs(30))
        .await
        .expect("lease");
    assert_eq!(again.len(), 1, "the expired lease makes it due again");
    q.ack(&again[0]).await.expect("ack");
    assert_eq!(
        q.get(id).await.expect("get").expect("row").state,
        ItemState::Done
    );
}
