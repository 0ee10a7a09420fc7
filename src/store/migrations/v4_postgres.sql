-- flowguard schema, version 4 (PostgreSQL): serve — ingestion idempotency, scheduler state.
CREATE TABLE IF NOT EXISTS ingest_events (
    id          VARCHAR(191) PRIMARY KEY,
    run_id      VARCHAR(64) NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_state (
    job       VARCHAR(191) PRIMARY KEY,
    last_fire BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_flow_status_started ON runs (flow, status, started_at);
