-- flowguard schema, version 18 (SQLite): indexes for the start-up alert sweep (runs ended in the
-- last day with no alert, none of their flow succeeding since), so it stays quick at millions of runs.
CREATE INDEX IF NOT EXISTS runs_status_ended ON runs (status, ended_at);
CREATE INDEX IF NOT EXISTS runs_flow_status_ended ON runs (flow, status, ended_at);
CREATE INDEX IF NOT EXISTS alert_occurrences_run ON alert_occurrences (run_id);
