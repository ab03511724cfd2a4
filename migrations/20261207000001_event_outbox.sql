-- Events out (issue 16): the transactional outbox.
--
-- A commit that writes status versions writes one row here in the same
-- transaction: the transfers it decided, and which of their versions it
-- wrote. One row per commit, not per event, so that the commit pays one
-- small insert however large its batch. A relay publishes a row's events to
-- the events topic, then sets `sent_at`; rows sent longer ago than the
-- retention setting are deleted. An event's id derives from (transfer id,
-- version), so publishing a row twice after a crash repeats the same ids.
CREATE TABLE event_outbox (
    outbox_id    BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transfer_ids UUID[]      NOT NULL CHECK (cardinality(transfer_ids) >= 1),
    -- Every listed transfer's versions from_version..=to_version are events.
    from_version INTEGER     NOT NULL CHECK (from_version >= 1),
    to_version   INTEGER     NOT NULL CHECK (to_version >= from_version),
    written_at   TIMESTAMPTZ NOT NULL,
    sent_at      TIMESTAMPTZ
);

-- What the relay claims, oldest first; small, since sent rows leave it.
CREATE INDEX event_outbox_unsent ON event_outbox (outbox_id) WHERE sent_at IS NULL;
-- What retention deletes.
CREATE INDEX event_outbox_sent ON event_outbox (sent_at) WHERE sent_at IS NOT NULL;
