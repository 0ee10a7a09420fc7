-- flowguard schema, version 14 (sqlite): a breaker per model, shared by every process on the
-- database (its state row, its sliding window of calls in buckets, the history of its changes);
-- and the price of each model call with the day's cost per flow in the rollups.
CREATE TABLE IF NOT EXISTS model_breakers (
    model       TEXT NOT NULL PRIMARY KEY,
    state       TEXT NOT NULL,
    since_ms    INTEGER NOT NULL,
    generation  INTEGER NOT NULL,
    probe_until INTEGER,
    calls       INTEGER NOT NULL DEFAULT 0,
    failures    INTEGER NOT NULL DEFAULT 0,
    updated_by  TEXT
);
CREATE TABLE IF NOT EXISTS model_breaker_counts (
    model     TEXT NOT NULL,
    bucket_ms INTEGER NOT NULL,
    calls     INTEGER NOT NULL DEFAULT 0,
    failures  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model, bucket_ms)
);
CREATE TABLE IF NOT EXISTS model_breaker_events (
    id        TEXT NOT NULL PRIMARY KEY,
    model     TEXT NOT NULL,
    event     TEXT NOT NULL,
    at_ms     INTEGER NOT NULL,
    calls     INTEGER NOT NULL,
    failures  INTEGER NOT NULL,
    run_id    TEXT,
    owner     TEXT NOT NULL,
    note      TEXT
);
CREATE INDEX IF NOT EXISTS model_breaker_events_model ON model_breaker_events (model, at_ms);
ALTER TABLE node_attempts ADD COLUMN cost_nanos INTEGER;
ALTER TABLE node_attempts ADD COLUMN currency TEXT;
CREATE TABLE IF NOT EXISTS rollup_costs (
    bucket_ms  INTEGER NOT NULL,
    flow       TEXT NOT NULL,
    currency   TEXT NOT NULL,
    tokens_in  INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cost_nanos INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, currency)
);
