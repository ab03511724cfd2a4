-- Per-plugin limits (issue 14): each version's memory and fuel, fixed at
-- upload ({"memory_bytes_max", "call_fuel_max", "configure_fuel_max"}).
-- NULL for versions uploaded by the previous release: they get the defaults
-- for their component's size, which for every component that release could
-- load (compiled languages, a few hundred KB) are that release's limits.
ALTER TABLE plugins ADD COLUMN limits JSONB;
