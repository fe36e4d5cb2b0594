-- v2 -> v3: Links say which protocol their remote room is on
-- Every link made before this was a Linearized Matrix one.
ALTER TABLE bridge_link ADD COLUMN protocol TEXT NOT NULL DEFAULT 'lm';
