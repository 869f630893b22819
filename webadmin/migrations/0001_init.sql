-- Web admin state: setup, accounts, sessions, login failures, audit log, queue samples.
CREATE TABLE setup (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    done_at INTEGER NOT NULL,
    profile TEXT NOT NULL,
    network TEXT NOT NULL,
    ntp TEXT NOT NULL
);
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    phc TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users(name),
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE login_failures (
    subject TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX login_failures_subject ON login_failures(subject, at);
CREATE TABLE lockouts (
    subject TEXT PRIMARY KEY,
    until INTEGER NOT NULL
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    address TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX audit_at ON audit(at);
CREATE TABLE queue_samples (
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    depth INTEGER NOT NULL,
    oldest_secs INTEGER NOT NULL
);
CREATE INDEX queue_samples_at ON queue_samples(at);
