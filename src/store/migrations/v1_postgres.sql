-- flowguard schema, version 1 (PostgreSQL 14+).
CREATE TABLE IF NOT EXISTS runs (
    id            TEXT PRIMARY KEY,
    flow          TEXT NOT NULL,
    flow_hash     TEXT NOT NULL,
    trigger_kind  TEXT NOT NULL,
    status        TEXT NOT NULL,
    canary        BIGINT NOT NULL DEFAULT 0,
    inputs        TEXT,
    started_at    BIGINT NOT NULL,
    ended_at      BIGINT,
    duration_ms   BIGINT,
    failed_node   TEXT,
    error_kind    TEXT,
    error_message TEXT,
    severity      TEXT
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE INDEX IF NOT EXISTS runs_flow_started ON runs (flow, started_at);
CREATE INDEX IF NOT EXISTS runs_status_started ON runs (status, started_at);
CREATE TABLE IF NOT EXISTS node_attempts (
    id            BIGSERIAL PRIMARY KEY,
    run_id        TEXT NOT NULL,
    flow          TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    kind          TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    attempt       BIGINT NOT NULL,
    iteration     BIGINT,
    status        TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    ended_at      BIGINT NOT NULL,
    duration_ms   BIGINT NOT NULL,
    input_bytes   BIGINT NOT NULL,
    output_bytes  BIGINT NOT NULL,
    input         TEXT,
    output        TEXT,
    retried       BIGINT NOT NULL DEFAULT 0,
    action        TEXT,
    error_kind    TEXT,
    error_message TEXT,
    model         TEXT,
    tokens_in     BIGINT,
    tokens_out    BIGINT,
    http_status   BIGINT
);
CREATE INDEX IF NOT EXISTS node_attempts_run ON node_attempts (run_id, seq);
CREATE INDEX IF NOT EXISTS node_attempts_started ON node_attempts (started_at);
