-- Policy fails closed (issue 12, item 9): the global `plugin_failure_mode`
-- setting is gone. A validator may instead be uploaded as advisory (shadow
-- mode): its rejections and faults are recorded with `advisory: true` in the
-- transfer's decisions, and the transfer goes on. Never the default, and
-- never a describer or converter. Rows of the previous release stay binding.

ALTER TABLE plugins ADD COLUMN advisory BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE plugins ADD CONSTRAINT plugins_only_validators_are_advisory CHECK (NOT advisory OR kind = 'validator');
