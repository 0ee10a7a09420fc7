-- flowguard schema, version 12 (SQLite): the sweep for external runs gone silent looks up the
-- newest event of a run.
CREATE INDEX IF NOT EXISTS ingest_events_run ON ingest_events (run_id, received_at);
