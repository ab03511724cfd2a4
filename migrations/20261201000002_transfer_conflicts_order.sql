-- A stable order for the admin listing of id conflicts (newest first, paged
-- by this id): `at` alone cannot page, since one batch records its conflicts
-- at one instant. Rows already there are numbered in the table's physical
-- order, which is close to their insertion order; the table is small (a
-- conflict is a client's mistake), so the rewrite this causes is short.
ALTER TABLE transfer_conflicts ADD COLUMN conflict_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
