-- flowguard schema, version 18 (MySQL 8 / MariaDB 10.6+): indexes for the start-up alert sweep (runs
-- ended in the last day with no alert, none of their flow succeeding since), so it stays quick at
-- millions of runs.
CREATE INDEX runs_status_ended ON runs (status, ended_at);
CREATE INDEX runs_flow_status_ended ON runs (flow, status, ended_at);
CREATE INDEX alert_occurrences_run ON alert_occurrences (run_id);
