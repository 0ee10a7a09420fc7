-- flowguard schema, version 20 (MySQL/MariaDB): an external run keeps when its newest event came
-- (`runs.last_event_at`, written with the run by ingestion), which the sweep for silent runs reads
-- instead of an index over every event.
ALTER TABLE runs ADD COLUMN last_event_at BIGINT NULL;
UPDATE runs r JOIN (SELECT run_id, MAX(received_at) AS newest FROM ingest_events GROUP BY run_id) e ON e.run_id = r.id
SET r.last_event_at = e.newest;
DROP INDEX ingest_events_run ON ingest_events;
