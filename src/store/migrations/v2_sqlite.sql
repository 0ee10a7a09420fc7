-- Error handling: node outputs kept for resuming, the manual queue, flow blocks, cancel requests.
CREATE TABLE IF NOT EXISTS run_outputs (
    run_id   TEXT NOT NULL,
    node_id  TEXT NOT NULL,
    output   TEXT NOT NULL,
    PRIMARY KEY (run_id, node_id)
);
CREATE TABLE IF NOT EXISTS manual_tasks (
    id            TEXT PRIMARY KEY,
    run_id        TEXT NOT NULL,
    flow          TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    error_kind    TEXT NOT NULL,
    error_message TEXT,
    severity      TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    closed_at     INTEGER,
    closed_by     TEXT,
    note          TEXT
);
CREATE INDEX IF NOT EXISTS manual_tasks_status ON manual_tasks (status, created_at);
CREATE INDEX IF NOT EXISTS manual_tasks_run ON manual_tasks (run_id);
CREATE TABLE IF NOT EXISTS manual_actions (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id  TEXT NOT NULL,
    run_id   TEXT NOT NULL,
    action   TEXT NOT NULL,
    actor    TEXT NOT NULL,
    note     TEXT,
    at       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS manual_actions_task ON manual_actions (task_id, at);
CREATE TABLE IF NOT EXISTS flow_blocks (
    flow        TEXT PRIMARY KEY,
    blocked_at  INTEGER NOT NULL,
    run_id      TEXT,
    reason      TEXT,
    blocked_by  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS block_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    flow    TEXT NOT NULL,
    action  TEXT NOT NULL,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    reason  TEXT,
    run_id  TEXT
);
CREATE INDEX IF NOT EXISTS block_events_flow ON block_events (flow, at);
CREATE TABLE IF NOT EXISTS run_cancels (
    run_id        TEXT PRIMARY KEY,
    requested_at  INTEGER NOT NULL,
    requested_by  TEXT NOT NULL
);
