-- flowguard schema, version 7 (MySQL 8 / MariaDB 10.6+): alert state shared by several processes on
-- one database. `alerts.open_key` is the fingerprint while the alert is open (firing or silenced)
-- and NULL once resolved: its unique index makes one open alert per fingerprint (MySQL has no
-- partial indexes; NULLs do not collide). `notifications.claim` names the process that holds a
-- send (fencing its result). `channel_sends`/`channel_blocks` are the bots' rate windows, shared by
-- every process.
ALTER TABLE alerts ADD COLUMN open_key VARCHAR(191) NULL;
UPDATE alerts a JOIN alerts b ON b.fingerprint = a.fingerprint AND b.status IN ('firing', 'silenced')
   AND (b.first_seen > a.first_seen OR (b.first_seen = a.first_seen AND b.id > a.id))
   SET a.status = 'resolved', a.resolved_at = a.last_seen
 WHERE a.status IN ('firing', 'silenced');
UPDATE alerts SET open_key = fingerprint WHERE status IN ('firing', 'silenced');
CREATE UNIQUE INDEX alerts_open ON alerts (open_key);
ALTER TABLE notifications ADD COLUMN claim VARCHAR(64) NULL;
CREATE TABLE IF NOT EXISTS channel_sends (
    slot    VARCHAR(64) PRIMARY KEY,
    channel VARCHAR(191) NOT NULL,
    at      BIGINT NOT NULL,
    INDEX channel_sends_at (channel, at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS channel_blocks (
    channel       VARCHAR(191) PRIMARY KEY,
    blocked_until BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX notifications_group ON notifications (group_key, status);
