-- One row per accepted item of every durable queue (outbox, inbox, ...).
-- Timestamps are Unix milliseconds. While an item is leased, next_attempt_at holds the
-- lease expiry: a crashed consumer's item becomes due again exactly when its lease ends.
-- No CHECK constraints on purpose: corruption arrives from the disk, not through SQL, so
-- the queue validates rows when it opens and when it leases them (see lib.rs).
CREATE TABLE items (
    id               INTEGER PRIMARY KEY,
    kind             TEXT    NOT NULL,
    idempotency_key  TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_gen        INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL,
    settled_at       INTEGER,
    payload          BLOB,
    payload_file     TEXT,
    payload_len      INTEGER NOT NULL,
    payload_sha256   BLOB    NOT NULL,
    last_error       TEXT,
    UNIQUE (kind, idempotency_key)
);

-- Leasing and the depth/oldest-age metrics read only live items.
CREATE INDEX items_due ON items (kind, next_attempt_at, created_at)
    WHERE state IN ('queued', 'failed', 'leased');
CREATE INDEX items_dead ON items (kind) WHERE state = 'dead';
CREATE INDEX items_done ON items (settled_at) WHERE state = 'done';

-- Rows that failed validation, moved aside with the reason. Columns are untyped on
-- purpose: they hold whatever the corrupt row held.
CREATE TABLE quarantine (
    qid              INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id,
    kind,
    idempotency_key,
    state,
    attempts,
    created_at,
    payload,
    payload_file,
    payload_len,
    payload_sha256,
    last_error,
    reason           TEXT    NOT NULL,
    quarantined_at   INTEGER NOT NULL
);
