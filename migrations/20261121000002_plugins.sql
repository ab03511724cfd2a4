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
-- what, and how long it took. Written in the transfer's own transaction.
CREATE TABLE plugin_decisions (
    transfer_id    UUID     NOT NULL REFERENCES transfers (transfer_id),
    position       SMALLINT NOT NULL,
    hook           TEXT     NOT NULL CHECK (hook IN ('describe', 'convert', 'validate')),
    plugin_name    TEXT     NOT NULL,
    plugin_version INTEGER  NOT NULL,
    plugin_sha256  BYTEA    NOT NULL,
    outcome        TEXT     NOT NULL CHECK (outcome IN ('allowed', 'rewritten', 'converted', 'rejected', 'failed')),
    code           TEXT,
    message        TEXT,
    duration_us    INTEGER  NOT NULL CHECK (duration_us >= 0),
    PRIMARY KEY (transfer_id, position)
);
