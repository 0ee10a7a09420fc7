-- flowguard schema, version 14 (mysql): a breaker per model, shared by every process on the
-- database (its state row, its sliding window of calls in buckets, the history of its changes);
-- and the price of each model call with the day's cost per flow in the rollups.
CREATE TABLE IF NOT EXISTS model_breakers (
    model       VARCHAR(191) NOT NULL PRIMARY KEY,
    state       VARCHAR(16) NOT NULL,
    since_ms    BIGINT NOT NULL,
    generation  BIGINT NOT NULL,
    probe_until BIGINT,
    calls       BIGINT NOT NULL DEFAULT 0,
    failures    BIGINT NOT NULL DEFAULT 0,
    updated_by  VARCHAR(191)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS model_breaker_counts (
    model     VARCHAR(191) NOT NULL,
    bucket_ms BIGINT NOT NULL,
    calls     BIGINT NOT NULL DEFAULT 0,
    failures  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (model, bucket_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS model_breaker_events (
    id        VARCHAR(64) NOT NULL PRIMARY KEY,
    model     VARCHAR(191) NOT NULL,
    event     VARCHAR(16) NOT NULL,
    at_ms     BIGINT NOT NULL,
    calls     BIGINT NOT NULL,
    failures  BIGINT NOT NULL,
    run_id    VARCHAR(64),
    owner     VARCHAR(191) NOT NULL,
    note      TEXT,
    INDEX model_breaker_events_model (model, at_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
ALTER TABLE node_attempts ADD COLUMN cost_nanos BIGINT NULL, ADD COLUMN currency VARCHAR(8) NULL;
CREATE TABLE IF NOT EXISTS rollup_costs (
    bucket_ms  BIGINT NOT NULL,
    flow       VARCHAR(191) NOT NULL,
    currency   VARCHAR(8) NOT NULL,
    tokens_in  BIGINT NOT NULL DEFAULT 0,
    tokens_out BIGINT NOT NULL DEFAULT 0,
    cost_nanos BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_ms, flow, currency)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
