-- flowguard schema, version 2 (MySQL/MariaDB): one row per (run, seq), so that a write retried
-- after its commit's acknowledgement was lost (the connection died during COMMIT) is not doubled.
DELETE FROM node_attempts WHERE id NOT IN (SELECT id FROM (SELECT MIN(id) AS id FROM node_attempts GROUP BY run_id, seq) AS keep_rows);
ALTER TABLE node_attempts DROP INDEX node_attempts_run, ADD UNIQUE INDEX node_attempts_run_seq (run_id, seq);
