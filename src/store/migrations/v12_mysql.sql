-- flowguard schema, version 12 (MySQL/MariaDB): the sweep for external runs gone silent looks up
-- the newest event of a run.
CREATE INDEX ingest_events_run ON ingest_events (run_id, received_at);
