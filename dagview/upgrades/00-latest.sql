-- v0 -> v1: Latest revision
CREATE TABLE dagview_room (
	room_id       TEXT    PRIMARY KEY,
	-- Whether the bot is joined, as last seen in the stream or the /state snapshot.
	bot_joined    BOOLEAN NOT NULL DEFAULT false,
	-- When the state was seeded from /state; NULL while the room is known only from its stream.
	seeded_at     BIGINT,
	-- The cursor: the position and ID of the last event appended to the room's stream. Catch-up resumes after it.
	position      BIGINT  NOT NULL DEFAULT 0,
	last_event_id TEXT,
	first_seen_at BIGINT  NOT NULL
);

CREATE TABLE dagview_event (
	room_id          TEXT    NOT NULL,
	position         BIGINT  NOT NULL,
	event_id         TEXT    NOT NULL,
	sender           TEXT    NOT NULL,
	type             TEXT    NOT NULL,
	state_key        TEXT,
	origin_server_ts BIGINT  NOT NULL,
	event_json       TEXT    NOT NULL,
	-- Set once the listener accepted the event; deliveries counts the calls to the listener, so a redelivery shows.
	delivered_at     BIGINT,
	deliveries       INTEGER NOT NULL DEFAULT 0,

	PRIMARY KEY (room_id, position),
	CONSTRAINT dagview_event_id_unique UNIQUE (event_id),
	CONSTRAINT dagview_event_room_fkey FOREIGN KEY (room_id) REFERENCES dagview_room (room_id) ON DELETE CASCADE
);

CREATE TABLE dagview_state (
	room_id    TEXT NOT NULL,
	type       TEXT NOT NULL,
	state_key  TEXT NOT NULL,
	event_id   TEXT NOT NULL,
	sender     TEXT NOT NULL,
	-- For m.room.member, the membership, so member lists need no JSON parsing.
	membership TEXT,
	event_json TEXT NOT NULL,

	PRIMARY KEY (room_id, type, state_key),
	CONSTRAINT dagview_state_room_fkey FOREIGN KEY (room_id) REFERENCES dagview_room (room_id) ON DELETE CASCADE
);
