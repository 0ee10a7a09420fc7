-- flowguard schema, version 3 (SQLite): alerts, their occurrences, groups, silences, the
-- notification outbox and every delivery attempt. Timestamps are UTC epoch milliseconds.
CREATE TABLE IF NOT EXISTS alerts (
    id            TEXT PRIMARY KEY,
    fingerprint   TEXT NOT NULL,
    flow          TEXT NOT NULL,
    node          TEXT NOT NULL,
    error_kind    TEXT NOT NULL,
    severity      TEXT NOT NULL,
    status        TEXT NOT NULL,
    labels        TEXT NOT NULL,
    count         INTEGER NOT NULL,
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    last_run_id   TEXT,
    last_message  TEXT,
    acked_at      INTEGER,
    acked_by      TEXT,
    escalated_at  INTEGER,
    notified_at   INTEGER,
    resolved_at   INTEGER
);
CREATE INDEX IF NOT EXISTS alerts_fp_status ON alerts (fingerprint, status);
CREATE INDEX IF NOT EXISTS alerts_status_seen ON alerts (status, last_seen);
CREATE INDEX IF NOT EXISTS alerts_flow_status ON alerts (flow, status);
CREATE TABLE IF NOT EXISTS alert_occurrences (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id      TEXT NOT NULL,
    run_id        TEXT,
    at            INTEGER NOT NULL,
    status        TEXT NOT NULL,
    message       TEXT
);
CREATE INDEX IF NOT EXISTS alert_occurrences_alert ON alert_occurrences (alert_id, at);
CREATE TABLE IF NOT EXISTS alert_groups (
    group_key     TEXT PRIMARY KEY,
    route         INTEGER NOT NULL,
    channel       TEXT NOT NULL,
    labels        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    dirty_since   INTEGER,
    last_sent_at  INTEGER,
    next_flush_at INTEGER
);
CREATE INDEX IF NOT EXISTS alert_groups_flush ON alert_groups (next_flush_at);
CREATE TABLE IF NOT EXISTS alert_group_members (
    group_key     TEXT NOT NULL,
    alert_id      TEXT NOT NULL,
    PRIMARY KEY (group_key, alert_id)
);
CREATE TABLE IF NOT EXISTS silences (
    id            TEXT PRIMARY KEY,
    matchers      TEXT NOT NULL,
    comment       TEXT,
    created_by    TEXT,
    created_at    INTEGER NOT NULL,
    ends_at       INTEGER NOT NULL,
    expired_at    INTEGER
);
CREATE TABLE IF NOT EXISTS notifications (
    id              TEXT PRIMARY KEY,
    group_key       TEXT,
    channel         TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    severity        TEXT NOT NULL,
    message         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    sent_at         INTEGER,
    last_error      TEXT,
    backup          TEXT,
    failover_of     TEXT
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS notifications_created ON notifications (created_at);
CREATE TABLE IF NOT EXISTS deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id TEXT NOT NULL,
    channel         TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    at              INTEGER NOT NULL,
    duration_ms     INTEGER NOT NULL,
    http_status     INTEGER,
    outcome         TEXT NOT NULL,
    answer          TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_notification ON deliveries (notification_id, attempt);
