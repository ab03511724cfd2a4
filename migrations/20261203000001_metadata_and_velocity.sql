-- Plugin context (issue 13): metadata on accounts and transfers, and the
-- index the sender's velocity windows are summed from.

-- An account's metadata ({"kyc_tier": "verified"}), replaced whole by
-- PATCH /v1/accounts/{owner_id}/{currency}. Validators read it under the
-- batch's row lock, so a change applies to every transfer committed after it.
-- A constant default: PostgreSQL adds the column without rewriting the table.
ALTER TABLE accounts ADD COLUMN metadata JSONB NOT NULL DEFAULT '{}'::jsonb
    CONSTRAINT accounts_metadata_is_object CHECK (jsonb_typeof(metadata) = 'object');

-- A transfer's metadata as submitted; NULL when it had none (every row of the
-- previous release), so old rows need no rewrite.
ALTER TABLE transfers ADD COLUMN metadata JSONB
    CONSTRAINT transfers_metadata_is_object CHECK (metadata IS NULL OR jsonb_typeof(metadata) = 'object');

-- Velocity: count and sum of an account's completed debits with a time
-- reference after a point. Only completed rows, and the amount rides in the
-- index, so a window is one index-only range scan. Building it reads the
-- whole transfers table once and blocks writes to it meanwhile: on a large
-- ledger, run this migration in a quiet window.
CREATE INDEX transfers_completed_debits ON transfers (debit_account_id, created_at)
    INCLUDE (amount_minor) WHERE status = 'completed';

-- Which interface version a plugin version was built against, and the
-- context a validator declared at upload ({"accounts": bool,
-- "velocity_windows_seconds": [...]}, NULL when none): what `plugins list`
-- shows. Every row of the previous release is 0.1.0, which declares nothing.
ALTER TABLE plugins ADD COLUMN wit_version TEXT NOT NULL DEFAULT '0.1.0'
    CONSTRAINT plugins_wit_version_known CHECK (wit_version IN ('0.1.0', '0.2.0'));
ALTER TABLE plugins ADD COLUMN needs JSONB;
