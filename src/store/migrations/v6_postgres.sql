-- flowguard schema, version 2 (PostgreSQL): one row per (run, seq), so that a write retried after
-- its commit's acknowledgement was lost (the connection died during COMMIT) is not doubled.
DELETE FROM node_attempts WHERE id NOT IN (SELECT MIN(id) FROM node_attempts GROUP BY run_id, seq);
DROP INDEX IF EXISTS node_attempts_run;
CREATE UNIQUE INDEX IF NOT EXISTS node_attempts_run_seq ON node_attempts (run_id, seq);
