-- Records the processor could neither apply nor put on the dead-letter topic
-- (the topic is gone, a record is too large for it, an ACL forbids it). Kept
-- byte for byte, with where they came from, so that an operator can inspect
-- and replay them (`transfer-engine dead-letters`). A redelivered record is
-- quarantined once: its source position is unique.
CREATE TABLE quarantined_records (
    quarantine_id    BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_topic     TEXT        NOT NULL,
    source_partition INTEGER     NOT NULL,
    source_offset    BIGINT      NOT NULL,
    record_key       BYTEA,
    -- [{"key": text, "value_base64": text or null}], in the record's order.
    headers          JSONB       NOT NULL DEFAULT '[]',
    payload          BYTEA,
    reason           TEXT        NOT NULL,
    quarantined_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set when an operator replayed it onto its source topic.
    replayed_at      TIMESTAMPTZ,
    UNIQUE (source_topic, source_partition, source_offset)
);
