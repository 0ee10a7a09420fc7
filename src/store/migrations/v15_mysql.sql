-- flowguard schema, version 15 (MySQL/MariaDB): exporters. Each sink (Elasticsearch, Feishu Bitable,
-- OTLP) follows the run log from its own cursor, held by one process at a time (a lease with a
-- fencing epoch). `run_ends` numbers each time a run reaches an end (final or waiting for a human),
-- so the exporters see run outcomes in commit order as they see node attempts by `node_attempts.id`.
CREATE TABLE IF NOT EXISTS exporter_cursors (
    sink          VARCHAR(64) NOT NULL PRIMARY KEY,
    attempt_id    BIGINT NOT NULL DEFAULT 0,
    run_end_seq   BIGINT NOT NULL DEFAULT 0,
    owner         VARCHAR(191),
    lease_until   BIGINT,
    epoch         BIGINT NOT NULL DEFAULT 0,
    sent          BIGINT NOT NULL DEFAULT 0,
    failed        BIGINT NOT NULL DEFAULT 0,
    rejected      BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT,
    failing_since BIGINT,
    updated_at    BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS run_ends (
    seq     BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    run_id  VARCHAR(64) NOT NULL,
    at      BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
