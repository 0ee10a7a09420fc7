-- flowguard schema, version 14 (postgres): a breaker per model, shared by every process on the
-- database (its state row, its sliding window of calls in buckets, the history of its changes);
-- and the price of each model call with the day's cost per flow in the rollups.
CREATE TABLE IF NOT EXISTS model_breakers (
    model       TEXT NOT NULL PRIMARY KEY,
    state       TEXT NOT NULL,
    since_ms    BIGINT NOT NULL,
    generation  BIGINT NOT NULL,
    probe_until BIGINT,
    calls       BIGINT NOT NULL DEFAULT 0,
    failures    BIGINT NOT NULL DEFAULT 0,
    updated_by  TEXT
);
CREATE TABLE IF NOT EXISTS model_breaker_counts (
    model     TEXT NOT NULL,
    bucket_ms BIGINT NOT NULL,
    calls     BIGINT NOT NULL DEFAULT 0,
    failures  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (model, bucket_ms)
);
CREATE TABLE IF NOT EXISTS model_breaker_events (
    id        TEXT NOT NULL PRIMARY KEY,
    model     TEXT NOT NULL,
    event     TEXT NOT NULL,
    at_ms     BIGINT NOT NULL,
    calls     BIGINT NOT NULL,
    failures  BIGINT NOT NULL,
    run_id    TEXT,
    owner     TEXT NOT NULL,
    note      TEXT
);
CREATE INDEX IF NOT EXISTS model_breaker_events_model ON model_breaker_events (model, at_ms);
ALTER TABLE node_attempts ADD COLUMN cost_nanos BIGINT;
ALTER TABLE node_attempts ADD COLUMN currency TEXT;
CREATE TABLE IF NOT EXISTS rollup_costs (
    bucket_ms  BIGINT NOT NULL,
    flow       TEXT NOT NULL,
    currency   TEXT NOT NULL,
    tokens_in  BIGINT NOT NULL DEFAULT 0,
    tokens_out BIGINT NOT NULL DEFAULT 0,
    cost_nanos BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, currency)
);
