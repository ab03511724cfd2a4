-- Webhooks (issue 16): endpoints that receive events over HTTP, signed as
-- the Standard Webhooks specification says.
CREATE TABLE webhooks (
    webhook_id UUID        PRIMARY KEY,
    url        TEXT        NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    -- Event types (`transfer.completed`...) it receives.
    events     TEXT[]      NOT NULL CHECK (cardinality(events) >= 1),
    -- The signing key, shown once at creation. Kept as it is, not hashed:
    -- every delivery is signed with it.
    secret     BYTEA       NOT NULL CHECK (length(secret) = 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set once: a deleted webhook gets no new deliveries, its pending ones
    -- are cancelled, and the API answers 404 for it and its deliveries
    -- (their rows stay, for an operator's query, until retention).
    deleted_at TIMESTAMPTZ
);

-- One event for one webhook: written by the relay in the transaction that
-- marks the event's outbox row sent (a second publication of the row finds
-- the delivery there), then attempted until it is delivered or its retry
-- window ends.
CREATE TABLE webhook_deliveries (
    delivery_id     BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      UUID        NOT NULL REFERENCES webhooks (webhook_id),
    event_id        UUID        NOT NULL,
    event_type      TEXT        NOT NULL,
    -- The event as published: every attempt sends these bytes.
    body            TEXT        NOT NULL,
    state           TEXT        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts        INTEGER     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When it is next due. An engine that takes it pushes this past the
    -- attempt's time limit, so no other engine takes it meanwhile, and one
    -- that dies mid-attempt leaves it to be taken again.
    next_attempt_at TIMESTAMPTZ NOT NULL,
    -- A failed attempt after this marks it failed (an operator may re-send it).
    retry_until     TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ,
    UNIQUE (webhook_id, event_id),
    CHECK ((state = 'pending') = (finished_at IS NULL))
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_recent ON webhook_deliveries (webhook_id, delivery_id DESC);

-- Every attempt of a delivery: what the receiver answered, and how fast.
CREATE TABLE webhook_attempts (
    delivery_id BIGINT      NOT NULL REFERENCES webhook_deliveries (delivery_id) ON DELETE CASCADE,
    attempt     INTEGER     NOT NULL CHECK (attempt >= 1),
    at          TIMESTAMPTZ NOT NULL,
    -- The receiver's HTTP status; NULL when none came (refused, timed out).
    http_status INTEGER,
    error       TEXT,
    latency_ms  INTEGER     NOT NULL CHECK (latency_ms >= 0),
    PRIMARY KEY (delivery_id, attempt)
);
