-- flowguard schema, version 1 (SQLite). Timestamps are UTC epoch milliseconds.
CREATE TABLE IF NOT EXISTS runs (
    id            TEXT PRIMARY KEY,
    flow          TEXT NOT NULL,
    flow_hash     TEXT NOT NULL,
    trigger_kind  TEXT NOT NULL,
    status        TEXT NOT NULL,
    canary        INTEGER NOT NULL DEFAULT 0,
    inputs        TEXT,
    started_at    INTEGER NOT NULL,
    ended_at      INTEGER,
    duration_ms   INTEGER,
    failed_node   TEXT,
    error_kind    TEXT,
    error_message TEXT,
    severity      TEXT
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE INDEX IF NOT EXISTS runs_flow_started ON runs (flow, started_at);
CREATE INDEX IF NOT EXISTS runs_status_started ON runs (status, started_at);
CREATE TABLE IF NOT EXISTS node_attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        TEXT NOT NULL,
    flow          TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    kind          TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    iteration     INTEGER,
    status        TEXT NOT NULL,
    started_at    INTEGER NOT NULL,
    ended_at      INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL,
    input_bytes   INTEGER NOT NULL,
    output_bytes  INTEGER NOT NULL,
    input         TEXT,
    output        TEXT,
    retried       INTEGER NOT NULL DEFAULT 0,
    action        TEXT,
    error_kind    TEXT,
    error_message TEXT,
    model         TEXT,
    tokens_in     INTEGER,
    tokens_out    INTEGER,
    http_status   INTEGER
);
CREATE INDEX IF NOT EXISTS node_attempts_run ON node_attempts (run_id, seq);
CREATE INDEX IF NOT EXISTS node_attempts_started ON node_attempts (started_at);
