-- flowguard schema, version 8 (PostgreSQL): run ownership. The process executing a run holds a
-- lease on it (owner, expiry, fencing epoch); every write of the run checks the epoch. Cron fires
-- happen once (one row per job and scheduled time); process lock rows (sweeps, single serve).
ALTER TABLE runs ADD COLUMN IF NOT EXISTS owner TEXT, ADD COLUMN IF NOT EXISTS lease_until BIGINT, ADD COLUMN IF NOT EXISTS epoch BIGINT NOT NULL DEFAULT 0, ADD COLUMN IF NOT EXISTS serial BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS runs_status_lease ON runs (status, lease_until);
CREATE TABLE IF NOT EXISTS cron_fires (
    job      TEXT NOT NULL,
    at_ms    BIGINT NOT NULL,
    fired_at BIGINT NOT NULL,
    owner    TEXT NOT NULL,
    PRIMARY KEY (job, at_ms)
);
CREATE TABLE IF NOT EXISTS process_locks (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    since       BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
);
