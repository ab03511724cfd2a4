-- API clients: who may call /v1/* besides the admin token, with which
-- scopes, and for which owners. Keys are never stored: only the SHA-256 of a
-- key's 256-bit random secret.
CREATE TABLE api_clients (
    client_id     UUID        PRIMARY KEY,
    name          TEXT        NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    secret_sha256 BYTEA       NOT NULL CHECK (length(secret_sha256) = 32),
    scopes        TEXT[]      NOT NULL CHECK (cardinality(scopes) >= 1),
    -- NULL: the client may act for any owner (a trusted back-end).
    owners        BIGINT[]    CHECK (owners IS NULL OR cardinality(owners) >= 1),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set once, never cleared: a revoked key stays revoked.
    revoked_at    TIMESTAMPTZ
);

-- The client that submitted a transfer; NULL for the admin token, for
-- deposits and withdrawals, and for transfers stored before clients existed.
-- No foreign key: clients are revoked, never deleted, and the commit path
-- should not pay for a check that cannot fail.
ALTER TABLE transfers ADD COLUMN client_id UUID;
