-- flowguard schema, version 4 (MySQL 8 / MariaDB 10.6+): serve — ingestion idempotency, scheduler state.
CREATE TABLE IF NOT EXISTS ingest_events (
    id          VARCHAR(191) NOT NULL PRIMARY KEY,
    run_id      VARCHAR(64) NOT NULL,
    received_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS schedule_state (
    job       VARCHAR(191) NOT NULL PRIMARY KEY,
    last_fire BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
