-- v0 -> v7: Latest revision
CREATE TABLE lm_room (
	room_id      TEXT    PRIMARY KEY,
	room_version TEXT    NOT NULL,
	hub_server   TEXT    NOT NULL,
	-- 'hub' when we hold the authoritative log, 'participant' when we mirror another hub's.
	role         TEXT    NOT NULL,
	-- 'joining' while send_join is in flight, so that fan-out racing the answer is retried rather than dropped.
	status       TEXT    NOT NULL,
	created_at   BIGINT  NOT NULL
);

-- The append-only log. The state before event N is the newest state event per (type, state_key) with idx < N, so the
-- log doubles as its own per-event state delta.
CREATE TABLE lm_event (
	room_id     TEXT    NOT NULL REFERENCES lm_room (room_id) ON DELETE CASCADE,
	idx         BIGINT  NOT NULL,
	event_id    TEXT    NOT NULL,
	lpdu_id     TEXT,
	event_type  TEXT    NOT NULL,
	state_key   TEXT,
	sender      TEXT    NOT NULL,
	pdu         TEXT    NOT NULL,
	received_at BIGINT  NOT NULL,
	PRIMARY KEY (room_id, idx),
	CONSTRAINT lm_event_id_unique UNIQUE (event_id)
);
-- Only state events: messages (most of the log) are never looked up by type.
CREATE INDEX lm_event_state_idx ON lm_event (room_id, event_type, state_key, idx) WHERE state_key IS NOT NULL;
-- LPDUs completed already are looked up by their ID; the hub's own events have none.
CREATE INDEX lm_event_lpdu_idx ON lm_event (lpdu_id) WHERE lpdu_id IS NOT NULL;

-- Events a participant knows without a place in its log: the state and auth chain returned by send_join.
CREATE TABLE lm_outlier (
	event_id TEXT PRIMARY KEY,
	room_id  TEXT NOT NULL REFERENCES lm_room (room_id) ON DELETE CASCADE,
	pdu      TEXT NOT NULL
);

CREATE TABLE lm_current_state (
	room_id    TEXT NOT NULL REFERENCES lm_room (room_id) ON DELETE CASCADE,
	event_type TEXT NOT NULL,
	state_key  TEXT NOT NULL,
	event_id   TEXT NOT NULL,
	membership TEXT,
	PRIMARY KEY (room_id, event_type, state_key)
);

-- Answers to /send transactions already applied, so a repeated txnId from the same origin is answered, not reapplied.
CREATE TABLE lm_received_txn (
	origin      TEXT   NOT NULL,
	txn_id      TEXT   NOT NULL,
	response    TEXT   NOT NULL,
	received_at BIGINT NOT NULL,
	PRIMARY KEY (origin, txn_id)
);

-- Per destination, in seq order: log events to fan out (lpdu NULL) or our LPDUs for a remote hub (lpdu set).
CREATE TABLE lm_outbox (
	destination TEXT   NOT NULL,
	seq         BIGINT NOT NULL,
	room_id     TEXT   NOT NULL,
	event_id    TEXT   NOT NULL,
	lpdu        TEXT,
	PRIMARY KEY (destination, seq)
);

-- Per destination: the transaction in flight (kept so a retry reuses its txnId) and the backoff.
CREATE TABLE lm_destination (
	destination  TEXT   PRIMARY KEY,
	txn_last_seq BIGINT NOT NULL,
	retry_count  INTEGER NOT NULL,
	next_attempt BIGINT NOT NULL,
	last_error   TEXT,
	-- The highest seq deleted for this destination: with the queued rows, what says which seqs were used, so that
	-- numbering goes on after everything was delivered.
	sent_up_to   BIGINT NOT NULL DEFAULT 0
);

-- How far each listener has consumed each room's log; delivery restarts from here after a crash.
CREATE TABLE lm_listener_cursor (
	listener TEXT   NOT NULL,
	room_id  TEXT   NOT NULL REFERENCES lm_room (room_id) ON DELETE CASCADE,
	idx      BIGINT NOT NULL,
	PRIMARY KEY (listener, room_id)
);

-- Invites for our users, kept until every listener has seen them.
CREATE TABLE lm_invite (
	event_id     TEXT   PRIMARY KEY,
	room_id      TEXT   NOT NULL,
	target       TEXT   NOT NULL,
	room_version TEXT   NOT NULL,
	pdu          TEXT   NOT NULL,
	stripped     TEXT   NOT NULL,
	received_at  BIGINT NOT NULL
);
CREATE TABLE lm_invite_delivered (
	listener TEXT NOT NULL,
	event_id TEXT NOT NULL REFERENCES lm_invite (event_id) ON DELETE CASCADE,
	PRIMARY KEY (listener, event_id)
);

-- Idempotency keys of events sent through SendEventKeyed (the bridge's source event IDs): a send repeated after a
-- crash finds the key and gets the first send's event or LPDU ID instead of sending a duplicate.
CREATE TABLE lm_send_key (
	room_id  TEXT   NOT NULL,
	send_key TEXT   NOT NULL,
	event_id TEXT   NOT NULL,
	sent_at  BIGINT NOT NULL,
	PRIMARY KEY (room_id, send_key)
);

-- A join whose send_join has not been answered yet: the LPDU we sent, sent again after a crash.
CREATE TABLE lm_join (
	room_id      TEXT   PRIMARY KEY REFERENCES lm_room (room_id) ON DELETE CASCADE,
	user_id      TEXT   NOT NULL,
	lpdu         TEXT   NOT NULL,
	room_version TEXT   NOT NULL,
	started_at   BIGINT NOT NULL
);

-- PDUs the hub sent for a room while our join was in flight, appended once the join is stored.
CREATE TABLE lm_join_pending (
	room_id     TEXT   NOT NULL REFERENCES lm_room (room_id) ON DELETE CASCADE,
	seq         BIGINT NOT NULL,
	event_id    TEXT   NOT NULL,
	pdu         TEXT   NOT NULL,
	received_at BIGINT NOT NULL,
	PRIMARY KEY (room_id, seq)
);
