-- flowguard schema, version 19 (PostgreSQL): a sink whose target makes a retry idempotent only
-- when it carries exactly the same records (Feishu Bitable's client_token) records the extent of
-- the delivery it is about to make before sending it; whoever holds the sink next sends exactly
-- that extent again first, and the cursor's advance clears it.
ALTER TABLE exporter_cursors ADD COLUMN IF NOT EXISTS inflight_attempt_to BIGINT;
ALTER TABLE exporter_cursors ADD COLUMN IF NOT EXISTS inflight_run_to BIGINT;
