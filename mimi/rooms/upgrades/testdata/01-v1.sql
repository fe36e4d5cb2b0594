-- v0 -> v1: Latest revision

-- What a keyed send put into a room: the same content (so the same message ID) goes out again when the bridge retries
-- a send whose outcome it did not record, and a send the hub accepted is not repeated.
CREATE TABLE mimi_rooms_send (
	room_uri   TEXT    NOT NULL,
	send_key   TEXT    NOT NULL,
	message_id BYTEA   NOT NULL,
	content    BYTEA   NOT NULL,
	accepted   BOOLEAN NOT NULL DEFAULT false,
	PRIMARY KEY (room_uri, send_key)
);

-- Every MIMI message that crossed either way, with what Matrix relations to it need: the message an edit chain
-- started from (Matrix edits point at the original), the message it replied to (edits and deletes repeat it), and
-- whether it is a reaction (removing it is an unlike).
CREATE TABLE mimi_rooms_message (
	message_id  BYTEA   PRIMARY KEY,
	room_uri    TEXT    NOT NULL,
	root_id     BYTEA   NOT NULL,
	in_reply_to BYTEA,
	reaction    BOOLEAN NOT NULL
);

-- A membership change this side asked for, until the provider reports it: the report then names who did it, and a
-- local user's join from a Welcome this side caused is not mistaken for an invite from another provider.
CREATE TABLE mimi_rooms_intent (
	room_uri TEXT NOT NULL,
	user_uri TEXT NOT NULL,
	kind     TEXT NOT NULL,
	actor    TEXT NOT NULL,
	PRIMARY KEY (room_uri, user_uri, kind)
);
