-- The ledger: PostgreSQL is the source of truth for every balance and status.
-- Money is BIGINT minor units everywhere; there is no floating-point column.

-- One account per (owner, currency). Owner 0 holds each currency's system
-- account, which deposits debit and withdrawals credit, so that the balances
-- of a currency always sum to zero.
CREATE TABLE accounts (
    account_id    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id      BIGINT      NOT NULL CHECK (owner_id >= 0),
    currency      TEXT        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    balance_minor BIGINT      NOT NULL DEFAULT 0,
    -- The lowest balance allowed: 0 means no overdraft. The commit code
    -- enforces it; this CHECK is the backstop if that code is ever wrong.
    floor_minor   BIGINT      NOT NULL DEFAULT 0,
    -- Rises by one with every balance change, so a cached balance can be
    -- ordered against another (see the Redis compare-and-set).
    version       BIGINT      NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (owner_id, currency),
    CHECK (balance_minor >= floor_minor),
    CHECK (owner_id = 0 OR floor_minor <= 0)
);

CREATE TABLE transfers (
    transfer_id       UUID        PRIMARY KEY,
    -- Insertion order, for stable newest-first pagination.
    seq               BIGINT      GENERATED ALWAYS AS IDENTITY UNIQUE,
    kind              TEXT        NOT NULL CHECK (kind IN ('transfer', 'deposit', 'withdrawal')),
    sender_id         BIGINT      NOT NULL,
    receiver_id       BIGINT      NOT NULL,
    -- NULL when the account did not exist (the transfer is then rejected).
    debit_account_id  BIGINT      REFERENCES accounts (account_id),
    credit_account_id BIGINT      REFERENCES accounts (account_id),
    currency          TEXT        NOT NULL,
    -- NULL only when the amount was never known (a conversion that failed).
    amount_minor      BIGINT      CHECK (amount_minor > 0),
    original_amount_minor BIGINT  CHECK (original_amount_minor > 0),
    original_currency TEXT,
    description       TEXT,
    status            TEXT        NOT NULL CHECK (status IN ('initiated', 'completed', 'rejected', 'failed')),
    status_version    INTEGER     NOT NULL CHECK (status_version >= 1),
    reason_code       TEXT,
    reason_message    TEXT,
    -- sha256 of what the transfer means: the same id with another fingerprint is a conflict.
    fingerprint       BYTEA       NOT NULL CHECK (length(fingerprint) = 32),
    created_at        TIMESTAMPTZ NOT NULL,
    committed_at      TIMESTAMPTZ,
    CHECK ((original_amount_minor IS NULL) = (original_currency IS NULL)),
    CHECK (status <> 'completed' OR (amount_minor IS NOT NULL AND debit_account_id IS NOT NULL AND credit_account_id IS NOT NULL)),
    CHECK ((status IN ('rejected', 'failed')) = (reason_code IS NOT NULL))
);

CREATE INDEX transfers_debit_account_seq ON transfers (debit_account_id, seq DESC);
CREATE INDEX transfers_credit_account_seq ON transfers (credit_account_id, seq DESC);

-- Double entry: a completed transfer has exactly one debit (negative) and one
-- credit (positive) row, and they sum to zero.
CREATE TABLE ledger_entries (
    transfer_id  UUID   NOT NULL REFERENCES transfers (transfer_id),
    account_id   BIGINT NOT NULL REFERENCES accounts (account_id),
    amount_minor BIGINT NOT NULL CHECK (amount_minor <> 0),
    PRIMARY KEY (transfer_id, account_id)
);

CREATE INDEX ledger_entries_account ON ledger_entries (account_id);

-- Every status a transfer has had. Version 1 is 'initiated'; each change adds
-- exactly one. Append-only: the trigger below refuses updates and deletes.
CREATE TABLE transfer_status_history (
    transfer_id    UUID        NOT NULL REFERENCES transfers (transfer_id),
    version        INTEGER     NOT NULL CHECK (version >= 1),
    status         TEXT        NOT NULL CHECK (status IN ('initiated', 'completed', 'rejected', 'failed')),
    reason_code    TEXT,
    reason_message TEXT,
    at             TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (transfer_id, version)
);

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;

CREATE TRIGGER transfer_status_history_append_only
    BEFORE UPDATE OR DELETE ON transfer_status_history
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

CREATE TRIGGER ledger_entries_append_only
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- A transfer id that arrived again with a different meaning. It is never
-- applied; it is recorded here so an operator can see who reused an id.
CREATE TABLE transfer_conflicts (
    transfer_id UUID        NOT NULL REFERENCES transfers (transfer_id),
    fingerprint BYTEA       NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX transfer_conflicts_transfer ON transfer_conflicts (transfer_id);
