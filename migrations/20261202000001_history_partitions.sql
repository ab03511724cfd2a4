-- Retention for the status history (README, "Retention").
--
-- `transfer_status_history` becomes a table partitioned by month of `at`, so
-- that months past their retention can be detached, archived and dropped
-- whole: no DELETE (which the append-only trigger refuses, and which would
-- bloat the hottest table), no long lock. Rows keep their meaning: the read
-- path rebuilds a detached month's rows from the `transfers` row, which
-- holds the same facts (version 1 `initiated` at `created_at`, the final
-- version at `committed_at`).
--
-- The rows already stored move as they are: the old table becomes the
-- partition for everything before the month after this migration runs
-- (one scan of it and one index build here, in proportion to its size), and is detached like any other month once its
-- newest row is past retention. Monthly partitions after it are created
-- ahead of time by the engine (`transfer-engine history prepare`, also run at
-- start-up and hourly); a row no partition covers lands in the default one.

ALTER TABLE transfer_status_history RENAME TO transfer_status_history_legacy;
-- A table has one primary key: attaching gives it the parent's (which adds `at`).
ALTER TABLE transfer_status_history_legacy DROP CONSTRAINT transfer_status_history_pkey;
DROP TRIGGER transfer_status_history_append_only ON transfer_status_history_legacy;

-- A partitioned table's key must hold the partition column, so PostgreSQL
-- no longer enforces (transfer_id, version) alone. The commit keeps it
-- unique: it writes a transfer's history only in the transaction that
-- inserts its `transfers` row (keyed by the transfer id), and the audit
-- checks that versions rise by one.
CREATE TABLE transfer_status_history (
    transfer_id    UUID        NOT NULL REFERENCES transfers (transfer_id),
    -- Named as the legacy table's, so that attaching it matches them.
    version        INTEGER     NOT NULL CONSTRAINT transfer_status_history_version_check CHECK (version >= 1),
    status         TEXT        NOT NULL CONSTRAINT transfer_status_history_status_check
                               CHECK (status IN ('initiated', 'completed', 'rejected', 'failed')),
    reason_code    TEXT,
    reason_message TEXT,
    at             TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (transfer_id, version, at)
) PARTITION BY RANGE (at);

CREATE TABLE transfer_status_history_default PARTITION OF transfer_status_history DEFAULT;

-- Every partition the engine made, with its range, so that retention never
-- has to parse partition bounds. `detached_at` is set when a month leaves
-- the table (its rows are then rebuilt from `transfers` when read), and
-- `dropped_at` when its table is dropped. `from_at` NULL: unbounded below
-- (the legacy partition).
CREATE TABLE transfer_status_history_partitions (
    name        TEXT        PRIMARY KEY,
    from_at     TIMESTAMPTZ,
    to_at       TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    detached_at TIMESTAMPTZ,
    dropped_at  TIMESTAMPTZ,
    CHECK (dropped_at IS NULL OR detached_at IS NOT NULL),
    CHECK (from_at IS NULL OR from_at < to_at)
);

DO $$
DECLARE
    -- In UTC, whatever the session's time zone: month bounds are UTC months.
    bound TIMESTAMPTZ := (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
BEGIN
    -- Rows dated after the bound (a clock far ahead) would fail the attach
    -- below; they move to the default partition, which takes any date.
    INSERT INTO transfer_status_history_default SELECT * FROM transfer_status_history_legacy WHERE at >= bound;
    DELETE FROM transfer_status_history_legacy WHERE at >= bound;
    EXECUTE format('ALTER TABLE transfer_status_history ATTACH PARTITION transfer_status_history_legacy FOR VALUES FROM (MINVALUE) TO (%L)', bound);
    INSERT INTO transfer_status_history_partitions (name, from_at, to_at) VALUES ('transfer_status_history_legacy', NULL, bound);
END;
$$;

-- Still append-only row by row (the trigger is cloned onto every partition,
-- present and future). Moving rows out of the default partition into a new
-- month is the one sanctioned delete: it re-inserts them in the same
-- transaction, and only the engine's partition maintenance sets the flag.
CREATE OR REPLACE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'transfer_status_history_default'
       AND current_setting('transfer_engine.moving_history', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;

CREATE TRIGGER transfer_status_history_append_only
    BEFORE UPDATE OR DELETE ON transfer_status_history
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
