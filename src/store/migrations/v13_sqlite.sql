-- flowguard schema, version 13 (sqlite): a scheduled fire that fell due while the database was away
-- and was not run (the flow does not catch up, or a later fire stood in for it) is kept, marked skipped.
ALTER TABLE cron_fires ADD COLUMN skipped INTEGER NOT NULL DEFAULT 0;
