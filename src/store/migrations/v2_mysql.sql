-- Error handling: node outputs kept for resuming, the manual queue, flow blocks, cancel requests.
CREATE TABLE IF NOT EXISTS run_outputs (
    run_id   VARCHAR(64) NOT NULL,
    node_id  VARCHAR(191) NOT NULL,
    output   LONGTEXT NOT NULL,
    PRIMARY KEY (run_id, node_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS manual_tasks (
    id            VARCHAR(64) NOT NULL PRIMARY KEY,
    run_id        VARCHAR(64) NOT NULL,
    flow          VARCHAR(191) NOT NULL,
    node_id       VARCHAR(191) NOT NULL,
    error_kind    VARCHAR(64) NOT NULL,
    error_message TEXT,
    severity      VARCHAR(16) NOT NULL,
    status        VARCHAR(32) NOT NULL,
    created_at    BIGINT NOT NULL,
    closed_at     BIGINT,
    closed_by     VARCHAR(191),
    note          TEXT,
    INDEX manual_tasks_status (status, created_at),
    INDEX manual_tasks_run (run_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS manual_actions (
    id       BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    task_id  VARCHAR(64) NOT NULL,
    run_id   VARCHAR(64) NOT NULL,
    action   VARCHAR(32) NOT NULL,
    actor    VARCHAR(191) NOT NULL,
    note     TEXT,
    at       BIGINT NOT NULL,
    INDEX manual_actions_task (task_id, at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS flow_blocks (
    flow        VARCHAR(191) NOT NULL PRIMARY KEY,
    blocked_at  BIGINT NOT NULL,
    run_id      VARCHAR(64),
    reason      TEXT,
    blocked_by  VARCHAR(191) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS block_events (
    id      BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    flow    VARCHAR(191) NOT NULL,
    action  VARCHAR(16) NOT NULL,
    at      BIGINT NOT NULL,
    actor   VARCHAR(191) NOT NULL,
    reason  TEXT,
    run_id  VARCHAR(64),
    INDEX block_events_flow (flow, at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS run_cancels (
    run_id        VARCHAR(64) NOT NULL PRIMARY KEY,
    requested_at  BIGINT NOT NULL,
    requested_by  VARCHAR(191) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
