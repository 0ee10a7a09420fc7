-- flowguard schema, version 20 (PostgreSQL): an external run keeps when its newest event came
-- (`runs.last_event_at`, written with the run by ingestion), which the sweep for silent runs reads
-- instead of an index over every event.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS last_event_at BIGINT;
UPDATE runs SET last_event_at = e.newest
FROM (SELECT run_id, MAX(received_at) AS newest FROM ingest_events GROUP BY run_id) e WHERE e.run_id = runs.id;
DROP INDEX IF EXISTS ingest_events_run;
