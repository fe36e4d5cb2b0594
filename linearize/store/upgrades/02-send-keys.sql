-- v1 -> v2: Idempotency keys of sent events
-- Idempotency keys of events sent through SendEventKeyed (the bridge's source event IDs): a send repeated after a
-- crash finds the key and gets the first send's event or LPDU ID instead of sending a duplicate.
CREATE TABLE lm_send_key (
	room_id  TEXT   NOT NULL,
	send_key TEXT   NOT NULL,
	event_id TEXT   NOT NULL,
	sent_at  BIGINT NOT NULL,
	PRIMARY KEY (room_id, send_key)
);
