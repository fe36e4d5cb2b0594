-- v2 -> v3: Index only state events for the state-before lookup
-- Message events (most of the log) have no state_key and are never looked up by type, so indexing them only cost an
-- index update per appended row.
DROP INDEX lm_event_state_idx;
CREATE INDEX lm_event_state_idx ON lm_event (room_id, event_type, state_key, idx) WHERE state_key IS NOT NULL;
