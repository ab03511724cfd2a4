-- Canaries and automatic rollback (issue 15).
--
-- A canary is a version of a validator that decides, in place of the name's
-- active version, for a sticky share of senders (by a stable hash of the
-- sender and the version). At most one runs per name. A stopped canary keeps
-- its row and says why it stopped.
CREATE TABLE plugin_canaries (
    id                 BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name               TEXT        NOT NULL,
    version            INTEGER     NOT NULL,
    -- 100 is not a canary but a promotion: `activate`.
    percent            SMALLINT    NOT NULL CHECK (percent BETWEEN 1 AND 99),
    -- Faults per million calls over the sliding window past which the canary
    -- is withdrawn automatically.
    max_fault_rate_ppm INTEGER     NOT NULL CHECK (max_fault_rate_ppm BETWEEN 0 AND 1000000),
    started_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    stopped_at         TIMESTAMPTZ,
    stop_reason        TEXT        CHECK (stop_reason IN ('withdrawn', 'replaced', 'promoted', 'deactivated', 'rolled_back')),
    CHECK ((stopped_at IS NULL) = (stop_reason IS NULL)),
    FOREIGN KEY (name, version) REFERENCES plugins (name, version)
);

CREATE UNIQUE INDEX plugin_canaries_one_running ON plugin_canaries (name) WHERE stopped_at IS NULL;

-- When a version became active, and the older version it replaced: a version
-- activated in the last `plugin_rollback_recent_minutes` whose fault rate
-- passes `plugin_rollback_fault_rate_max` is rolled back to that one. Both
-- are NULL for activations made before this migration, for a first
-- activation and for an activation of an older version (a rollback is never
-- undone automatically).
ALTER TABLE plugins ADD COLUMN activated_at TIMESTAMPTZ;
ALTER TABLE plugins ADD COLUMN replaced_version INTEGER;

-- Every automatic rollback: what was withdrawn, on what evidence, and what
-- decides instead. `plugins list` shows a version's latest one.
CREATE TABLE plugin_rollbacks (
    id                 BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name               TEXT        NOT NULL,
    version            INTEGER     NOT NULL,
    -- 'canary': the canary stopped; 'active': `restored_version` was made active again.
    role               TEXT        NOT NULL CHECK (role IN ('canary', 'active')),
    restored_version   INTEGER,
    calls              BIGINT      NOT NULL CHECK (calls > 0),
    faults             BIGINT      NOT NULL CHECK (faults BETWEEN 0 AND calls),
    max_fault_rate_ppm INTEGER     NOT NULL,
    window_seconds     INTEGER     NOT NULL,
    at                 TIMESTAMPTZ NOT NULL DEFAULT now(),
    FOREIGN KEY (name, version) REFERENCES plugins (name, version)
);

CREATE INDEX plugin_rollbacks_version ON plugin_rollbacks (name, version, at DESC);
