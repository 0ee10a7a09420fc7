-- flowguard schema, version 5 (SQLite): report rollups per 15-minute bucket (UTC epoch ms of the
-- bucket start, aligned with every time zone's day boundary), stored reports and send markers.
CREATE TABLE IF NOT EXISTS rollup_runs (
    bucket_ms   INTEGER NOT NULL,
    flow        TEXT NOT NULL,
    canary      INTEGER NOT NULL,
    status      TEXT NOT NULL,
    runs        INTEGER NOT NULL DEFAULT 0,
    backup_runs INTEGER NOT NULL DEFAULT 0,
    dur_n       INTEGER NOT NULL DEFAULT 0,
    dur_sum     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, canary, status)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_run_errors (
    bucket_ms  INTEGER NOT NULL,
    flow       TEXT NOT NULL,
    node       TEXT NOT NULL,
    error_kind TEXT NOT NULL,
    runs       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, node, error_kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_nodes (
    bucket_ms  INTEGER NOT NULL,
    flow       TEXT NOT NULL,
    node       TEXT NOT NULL,
    model      TEXT NOT NULL,
    kind       TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    ok         INTEGER NOT NULL DEFAULT 0,
    failed     INTEGER NOT NULL DEFAULT 0,
    timed_out  INTEGER NOT NULL DEFAULT 0,
    retries    INTEGER NOT NULL DEFAULT 0,
    next_model INTEGER NOT NULL DEFAULT 0,
    dur_sum    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, node, model)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_node_errors (
    bucket_ms  INTEGER NOT NULL,
    flow       TEXT NOT NULL,
    node       TEXT NOT NULL,
    error_kind TEXT NOT NULL,
    n          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, node, error_kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_hist (
    bucket_ms INTEGER NOT NULL,
    flow      TEXT NOT NULL,
    node      TEXT NOT NULL,
    bin       INTEGER NOT NULL,
    n         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, node, bin)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_seen (
    run_id      TEXT NOT NULL PRIMARY KEY,
    bucket_ms   INTEGER NOT NULL,
    status      TEXT NOT NULL,
    duration_ms INTEGER,
    failed_node TEXT,
    error_kind  TEXT,
    backup      INTEGER NOT NULL DEFAULT 0,
    last_seq    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS reports (
    kind       TEXT NOT NULL,
    period     TEXT NOT NULL,
    since_ms   INTEGER NOT NULL,
    until_ms   INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    claimed_at INTEGER,
    sent_at    INTEGER,
    body       TEXT NOT NULL,
    markdown   TEXT NOT NULL,
    PRIMARY KEY (kind, period)
);
