-- flowguard schema, version 20 (SQLite): an external run keeps when its newest event came
-- (`runs.last_event_at`, written with the run by ingestion), which the sweep for silent runs reads
-- instead of an index over every event; the ids of ingested events are kept in their primary key
-- alone (WITHOUT ROWID), one b-tree where there were three.
ALTER TABLE runs ADD COLUMN last_event_at INTEGER;
UPDATE runs SET last_event_at = (SELECT MAX(e.received_at) FROM ingest_events e WHERE e.run_id = runs.id)
WHERE trigger_kind = 'external';
CREATE TABLE ingest_events_v20 (
    id          TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL,
    received_at INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO ingest_events_v20 (id, run_id, received_at) SELECT id, run_id, received_at FROM ingest_events;
DROP TABLE ingest_events;
ALTER TABLE ingest_events_v20 RENAME TO ingest_events;
