-- Plugins: sandboxed WebAssembly components, versioned per name.

CREATE TABLE plugins (
    name         TEXT        NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    -- Rises by one per upload of the same name; never reused.
    version      INTEGER     NOT NULL CHECK (version >= 1),
    kind         TEXT        NOT NULL CHECK (kind IN ('validator', 'converter', 'describer')),
    sha256       BYTEA       NOT NULL CHECK (length(sha256) = 32),
    component    BYTEA       NOT NULL,
    -- The operator's JSON for this plugin, passed to its `configure`.
    config       TEXT        NOT NULL,
    active       BOOLEAN     NOT NULL DEFAULT false,
    uploaded_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

-- At most one active version per name.
CREATE UNIQUE INDEX plugins_one_active_version ON plugins (name) WHERE active;

-- The order in which active validators run (the first rejection wins).
CREATE TABLE validation_order (
    name     TEXT    PRIMARY KEY,
    position INTEGER NOT NULL
);

-- Bumped by every change to the plugin set, so engines polling as a fallback
-- to LISTEN/NOTIFY can tell whether anything changed.
CREATE TABLE plugin_generation (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    generation BIGINT  NOT NULL
);
INSERT INTO plugin_generation (generation) VALUES (0);

-- For every transfer and hook that ran a plugin: which exact plugin decided
-- what, and how long it took, as a JSON array of
-- {hook, plugin, version, sha256, outcome, code, message, duration_us}.
-- A column of the transfer's own row, so the record is written by the same
-- statement as the transfer (and costs no extra row or index entry).
ALTER TABLE transfers ADD COLUMN decisions JSONB CHECK (jsonb_typeof(decisions) = 'array');
