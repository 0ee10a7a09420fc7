-- flowguard schema, version 8 (SQLite): run ownership. The process executing a run holds a lease on
-- it (owner, expiry, fencing epoch); every write of the run checks the epoch. Cron fires happen once
-- (one row per job and scheduled time), and one `serve` per SQLite file (a process lock row).
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until INTEGER;
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN serial INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS runs_status_lease ON runs (status, lease_until);
CREATE TABLE IF NOT EXISTS cron_fires (
    job      TEXT NOT NULL,
    at_ms    INTEGER NOT NULL,
    fired_at INTEGER NOT NULL,
    owner    TEXT NOT NULL,
    PRIMARY KEY (job, at_ms)
);
CREATE TABLE IF NOT EXISTS process_locks (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    since       INTEGER NOT NULL,
    lease_until INTEGER NOT NULL
);
