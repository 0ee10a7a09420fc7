-- flowguard schema, version 4 (SQLite): serve — ingestion idempotency, scheduler state.
-- Event ids already applied by POST /api/v1/events (a repeated id is answered `duplicate`).
CREATE TABLE IF NOT EXISTS ingest_events (
    id          TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
-- The last time each cron job fired (for catch-up after downtime).
CREATE TABLE IF NOT EXISTS schedule_state (
    job       TEXT PRIMARY KEY,
    last_fire INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_flow_status_started ON runs (flow, status, started_at);
