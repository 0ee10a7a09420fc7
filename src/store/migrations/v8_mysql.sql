-- flowguard schema, version 8 (MySQL/MariaDB): run ownership. The process executing a run holds a
-- lease on it (owner, expiry, fencing epoch); every write of the run checks the epoch. Cron fires
-- happen once (one row per job and scheduled time); process lock rows (sweeps, single serve).
ALTER TABLE runs ADD COLUMN owner VARCHAR(191), ADD COLUMN lease_until BIGINT, ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0, ADD COLUMN serial BIGINT NOT NULL DEFAULT 0, ADD INDEX runs_status_lease (status, lease_until);
CREATE TABLE IF NOT EXISTS cron_fires (
    job      VARCHAR(191) NOT NULL,
    at_ms    BIGINT NOT NULL,
    fired_at BIGINT NOT NULL,
    owner    VARCHAR(191) NOT NULL,
    PRIMARY KEY (job, at_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS process_locks (
    name        VARCHAR(191) NOT NULL PRIMARY KEY,
    owner       VARCHAR(191) NOT NULL,
    since       BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
