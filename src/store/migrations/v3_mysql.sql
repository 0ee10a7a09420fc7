-- flowguard schema, version 3 (MySQL 8 / MariaDB 10.6+), utf8mb4 throughout: alerts, their occurrences, groups, silences, the
-- notification outbox and every delivery attempt. Timestamps are UTC epoch milliseconds.
CREATE TABLE IF NOT EXISTS alerts (
    id            VARCHAR(64) PRIMARY KEY,
    fingerprint   VARCHAR(191) NOT NULL,
    flow          VARCHAR(191) NOT NULL,
    node          VARCHAR(191) NOT NULL,
    error_kind    VARCHAR(64) NOT NULL,
    severity      VARCHAR(64) NOT NULL,
    status        VARCHAR(64) NOT NULL,
    labels        TEXT NOT NULL,
    count         BIGINT NOT NULL,
    first_seen    BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL,
    last_run_id   VARCHAR(64),
    last_message  MEDIUMTEXT,
    acked_at      BIGINT,
    acked_by      VARCHAR(191),
    escalated_at  BIGINT,
    notified_at   BIGINT,
    resolved_at   BIGINT,
    INDEX alerts_fp_status (fingerprint, status),
    INDEX alerts_status_seen (status, last_seen),
    INDEX alerts_flow_status (flow, status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS alert_occurrences (
    id            BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    alert_id      VARCHAR(64) NOT NULL,
    run_id        VARCHAR(64),
    at            BIGINT NOT NULL,
    status        VARCHAR(64) NOT NULL,
    message       MEDIUMTEXT,
    INDEX alert_occurrences_alert (alert_id, at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS alert_groups (
    group_key     VARCHAR(191) PRIMARY KEY,
    route         BIGINT NOT NULL,
    channel       VARCHAR(191) NOT NULL,
    labels        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    dirty_since   BIGINT,
    last_sent_at  BIGINT,
    next_flush_at BIGINT,
    INDEX alert_groups_flush (next_flush_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS alert_group_members (
    group_key     VARCHAR(191) NOT NULL,
    alert_id      VARCHAR(64) NOT NULL,
    PRIMARY KEY (group_key, alert_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS silences (
    id            VARCHAR(64) PRIMARY KEY,
    matchers      TEXT NOT NULL,
    comment       TEXT,
    created_by    VARCHAR(191),
    created_at    BIGINT NOT NULL,
    ends_at       BIGINT NOT NULL,
    expired_at    BIGINT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS notifications (
    id              VARCHAR(64) PRIMARY KEY,
    group_key       VARCHAR(191),
    channel         VARCHAR(191) NOT NULL,
    purpose         VARCHAR(64) NOT NULL,
    severity        VARCHAR(64) NOT NULL,
    message         MEDIUMTEXT NOT NULL,
    status          VARCHAR(64) NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    sent_at         BIGINT,
    last_error      MEDIUMTEXT,
    backup          VARCHAR(191),
    failover_of     VARCHAR(64),
    INDEX notifications_due (status, next_attempt_at),
    INDEX notifications_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS deliveries (
    id              BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    notification_id VARCHAR(64) NOT NULL,
    channel         VARCHAR(191) NOT NULL,
    attempt         BIGINT NOT NULL,
    at              BIGINT NOT NULL,
    duration_ms     BIGINT NOT NULL,
    http_status     BIGINT,
    outcome         VARCHAR(64) NOT NULL,
    answer          MEDIUMTEXT,
    INDEX deliveries_notification (notification_id, attempt)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
