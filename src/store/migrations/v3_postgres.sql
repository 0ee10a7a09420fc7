-- flowguard schema, version 3 (PostgreSQL): alerts, their occurrences, groups, silences, the
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
    count         BIGINT NOT NULL,
    first_seen    BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL,
    last_run_id   TEXT,
    last_message  TEXT,
    acked_at      BIGINT,
    acked_by      TEXT,
    escalated_at  BIGINT,
    notified_at   BIGINT,
    resolved_at   BIGINT
);
CREATE INDEX IF NOT EXISTS alerts_fp_status ON alerts (fingerprint, status);
CREATE INDEX IF NOT EXISTS alerts_status_seen ON alerts (status, last_seen);
CREATE INDEX IF NOT EXISTS alerts_flow_status ON alerts (flow, status);
CREATE TABLE IF NOT EXISTS alert_occurrences (
    id            BIGSERIAL PRIMARY KEY,
    alert_id      TEXT NOT NULL,
    run_id        TEXT,
    at            BIGINT NOT NULL,
    status        TEXT NOT NULL,
    message       TEXT
);
CREATE INDEX IF NOT EXISTS alert_occurrences_alert ON alert_occurrences (alert_id, at);
CREATE TABLE IF NOT EXISTS alert_groups (
    group_key     TEXT PRIMARY KEY,
    route         BIGINT NOT NULL,
    channel       TEXT NOT NULL,
    labels        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    dirty_since   BIGINT,
    last_sent_at  BIGINT,
    next_flush_at BIGINT
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
    created_at    BIGINT NOT NULL,
    ends_at       BIGINT NOT NULL,
    expired_at    BIGINT
);
CREATE TABLE IF NOT EXISTS notifications (
    id              TEXT PRIMARY KEY,
    group_key       TEXT,
    channel         TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    severity        TEXT NOT NULL,
    message         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    sent_at         BIGINT,
    last_error      TEXT,
    backup          TEXT,
    failover_of     TEXT
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS notifications_created ON notifications (created_at);
CREATE TABLE IF NOT EXISTS deliveries (
    id              BIGSERIAL PRIMARY KEY,
    notification_id TEXT NOT NULL,
    channel         TEXT NOT NULL,
    attempt         BIGINT NOT NULL,
    at              BIGINT NOT NULL,
    duration_ms     BIGINT NOT NULL,
    http_status     BIGINT,
    outcome         TEXT NOT NULL,
    answer          TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_notification ON deliveries (notification_id, attempt);
