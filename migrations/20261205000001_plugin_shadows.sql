-- Shadow runs (issue 15): a version of a validator that runs beside the
-- name's active version on every live transfer. Its decision is recorded with
-- the transfer (role "shadow") and never enforced. At most one shadow runs
-- per name; a stopped one keeps its row, so `plugins report` still finds
-- where its decisions are.
CREATE TABLE plugin_shadows (
    name       TEXT        NOT NULL,
    version    INTEGER     NOT NULL,
    -- The highest transfer seq when it started. Every transfer it decides is
    -- inserted later and has a higher seq, so a report scans from here.
    from_seq   BIGINT      NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    stopped_at TIMESTAMPTZ,
    FOREIGN KEY (name, version) REFERENCES plugins (name, version)
);

CREATE UNIQUE INDEX plugin_shadows_one_running ON plugin_shadows (name) WHERE stopped_at IS NULL;
CREATE INDEX plugin_shadows_version ON plugin_shadows (name, version);
