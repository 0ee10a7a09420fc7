-- flowguard schema, version 9 (MySQL/MariaDB): each attempt says whether the report rollups count
-- it, so an attempt that arrives late (an external node event after its run's end, batches out of
-- order) is counted once, whatever its place in the run. Attempts of runs already rolled up are marked.
ALTER TABLE node_attempts ADD COLUMN rolled_up INT NOT NULL DEFAULT 0;
UPDATE node_attempts SET rolled_up = 1 WHERE EXISTS (SELECT 1 FROM rollup_seen s WHERE s.run_id = node_attempts.run_id AND node_attempts.seq <= s.last_seq);
