-- Every state the updater reported (check, armed, rejected, fallback) and every admin request.
CREATE TABLE update_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
