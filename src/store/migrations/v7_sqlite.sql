-- flowguard schema, version 7 (SQLite): alert state shared by several processes on one database.
-- `alerts.open_key` is the fingerprint while the alert is open (firing or silenced) and NULL once
-- resolved: its unique index makes one open alert per fingerprint. `notifications.claim` names the
-- process that holds a send (fencing its result). `channel_sends`/`channel_blocks` are the bots'
-- rate windows, shared by every process.
ALTER TABLE alerts ADD COLUMN open_key TEXT;
UPDATE alerts SET status = 'resolved', resolved_at = last_seen
 WHERE status IN ('firing', 'silenced') AND EXISTS (
   SELECT 1 FROM alerts b WHERE b.fingerprint = alerts.fingerprint AND b.status IN ('firing', 'silenced')
      AND (b.first_seen > alerts.first_seen OR (b.first_seen = alerts.first_seen AND b.id > alerts.id)));
UPDATE alerts SET open_key = fingerprint WHERE status IN ('firing', 'silenced');
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open ON alerts (open_key);
ALTER TABLE notifications ADD COLUMN claim TEXT;
CREATE TABLE IF NOT EXISTS channel_sends (
    slot    TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS channel_sends_at ON channel_sends (channel, at);
CREATE TABLE IF NOT EXISTS channel_blocks (
    channel       TEXT PRIMARY KEY,
    blocked_until INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_group ON notifications (group_key, status);
