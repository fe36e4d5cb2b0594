-- v6 -> v7: Joins in flight and the PDUs that arrive during them
-- A join whose send_join has not been answered yet: the LPDU we sent, so that a join interrupted by a crash is sent
-- again (the same LPDU, which the hub answers again without appending twice) rather than forgotten while the hub
-- already counts us in and sends us its events.
CREATE TABLE lm_join (
	room_id      TEXT   PRIMARY KEY REFERENCES lm_room (room_id) ON DELETE CASCADE,
	user_id      TEXT   NOT NULL,
	lpdu         TEXT   NOT NULL,
	room_version TEXT   NOT NULL,
	started_at   BIGINT NOT NULL
);

-- PDUs the hub sent for a room while our join was in flight (eigen sends a new join to every server in the room,
-- the joining one included, before it answers send_join): accepted and answered, appended once the join is stored.
CREATE TABLE lm_join_pending (
	room_id     TEXT   NOT NULL REFERENCES lm_room (room_id) ON DELETE CASCADE,
	seq         BIGINT NOT NULL,
	event_id    TEXT   NOT NULL,
	pdu         TEXT   NOT NULL,
	received_at BIGINT NOT NULL,
	PRIMARY KEY (room_id, seq)
);
