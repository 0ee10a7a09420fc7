-- flowguard schema, version 5 (MySQL 8 / MariaDB 10.6+): report rollups per 15-minute bucket (UTC
-- epoch ms of the bucket start, aligned with every time zone's day boundary), stored reports and
-- send markers.
CREATE TABLE IF NOT EXISTS rollup_runs (
    bucket_ms   BIGINT NOT NULL,
    flow        VARCHAR(191) NOT NULL,
    canary      BIGINT NOT NULL,
    status      VARCHAR(32) NOT NULL,
    runs        BIGINT NOT NULL DEFAULT 0,
    backup_runs BIGINT NOT NULL DEFAULT 0,
    dur_n       BIGINT NOT NULL DEFAULT 0,
    dur_sum     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, canary, status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS rollup_run_errors (
    bucket_ms  BIGINT NOT NULL,
    flow       VARCHAR(191) NOT NULL,
    node       VARCHAR(191) NOT NULL,
    error_kind VARCHAR(64) NOT NULL,
    runs       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, node, error_kind)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS rollup_nodes (
    bucket_ms  BIGINT NOT NULL,
    flow       VARCHAR(191) NOT NULL,
    node       VARCHAR(191) NOT NULL,
    model      VARCHAR(191) NOT NULL,
    kind       VARCHAR(64) NOT NULL,
    attempts   BIGINT NOT NULL DEFAULT 0,
    ok         BIGINT NOT NULL DEFAULT 0,
    failed     BIGINT NOT NULL DEFAULT 0,
    timed_out  BIGINT NOT NULL DEFAULT 0,
    retries    BIGINT NOT NULL DEFAULT 0,
    next_model BIGINT NOT NULL DEFAULT 0,
    dur_sum    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, node, model)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS rollup_node_errors (
    bucket_ms  BIGINT NOT NULL,
    flow       VARCHAR(191) NOT NULL,
    node       VARCHAR(191) NOT NULL,
    error_kind VARCHAR(64) NOT NULL,
    n          BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, node, error_kind)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS rollup_hist (
    bucket_ms BIGINT NOT NULL,
    flow      VARCHAR(191) NOT NULL,
    node      VARCHAR(191) NOT NULL,
    bin       BIGINT NOT NULL,
    n         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, node, bin)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS rollup_seen (
    run_id      VARCHAR(64) NOT NULL PRIMARY KEY,
    bucket_ms   BIGINT NOT NULL,
    status      VARCHAR(32) NOT NULL,
    duration_ms BIGINT,
    failed_node VARCHAR(191),
    error_kind  VARCHAR(64),
    backup      BIGINT NOT NULL DEFAULT 0,
    last_seq    BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS reports (
    kind       VARCHAR(32) NOT NULL,
    period     VARCHAR(64) NOT NULL,
    since_ms   BIGINT NOT NULL,
    until_ms   BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    claimed_at BIGINT,
    sent_at    BIGINT,
    body       MEDIUMTEXT NOT NULL,
    markdown   MEDIUMTEXT NOT NULL,
    PRIMARY KEY (kind, period)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
