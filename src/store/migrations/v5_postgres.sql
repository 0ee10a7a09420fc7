-- flowguard schema, version 5 (PostgreSQL 14+): report rollups per 15-minute bucket (UTC epoch ms
-- of the bucket start, aligned with every time zone's day boundary), stored reports and send markers.
CREATE TABLE IF NOT EXISTS rollup_runs (
    bucket_ms   BIGINT NOT NULL,
    flow        TEXT NOT NULL,
    canary      BIGINT NOT NULL,
    status      TEXT NOT NULL,
    runs        BIGINT NOT NULL DEFAULT 0,
    backup_runs BIGINT NOT NULL DEFAULT 0,
    dur_n       BIGINT NOT NULL DEFAULT 0,
    dur_sum     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, canary, status)
);
CREATE TABLE IF NOT EXISTS rollup_run_errors (
    bucket_ms  BIGINT NOT NULL,
    flow       TEXT NOT NULL,
    node       TEXT NOT NULL,
    error_kind TEXT NOT NULL,
    runs       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, node, error_kind)
);
CREATE TABLE IF NOT EXISTS rollup_nodes (
    bucket_ms  BIGINT NOT NULL,
    flow       TEXT NOT NULL,
    node       TEXT NOT NULL,
    model      TEXT NOT NULL,
    kind       TEXT NOT NULL,
    attempts   BIGINT NOT NULL DEFAULT 0,
    ok         BIGINT NOT NULL DEFAULT 0,
    failed     BIGINT NOT NULL DEFAULT 0,
    timed_out  BIGINT NOT NULL DEFAULT 0,
    retries    BIGINT NOT NULL DEFAULT 0,
    next_model BIGINT NOT NULL DEFAULT 0,
    dur_sum    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, node, model)
);
CREATE TABLE IF NOT EXISTS rollup_node_errors (
    bucket_ms  BIGINT NOT NULL,
    flow       TEXT NOT NULL,
    node       TEXT NOT NULL,
    error_kind TEXT NOT NULL,
    n          BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, node, error_kind)
);
CREATE TABLE IF NOT EXISTS rollup_hist (
    bucket_ms BIGINT NOT NULL,
    flow      TEXT NOT NULL,
    node      TEXT NOT NULL,
    bin       BIGINT NOT NULL,
    n         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, node, bin)
);
CREATE TABLE IF NOT EXISTS rollup_seen (
    run_id      TEXT NOT NULL PRIMARY KEY,
    bucket_ms   BIGINT NOT NULL,
    status      TEXT NOT NULL,
    duration_ms BIGINT,
    failed_node TEXT,
    error_kind  TEXT,
    backup      BIGINT NOT NULL DEFAULT 0,
    last_seq    BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS reports (
    kind       TEXT NOT NULL,
    period     TEXT NOT NULL,
    since_ms   BIGINT NOT NULL,
    until_ms   BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    claimed_at BIGINT,
    sent_at    BIGINT,
    body       TEXT NOT NULL,
    markdown   TEXT NOT NULL,
    PRIMARY KEY (kind, period)
);
