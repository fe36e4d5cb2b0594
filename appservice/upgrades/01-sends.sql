-- v1 -> v2: Record sends under a deterministic transaction ID
-- A message sent under a deterministic transaction ID, written before the request goes out. Dendrite forgets a
-- transaction ID whose first request the client abandoned (a crash, a timeout) although it still creates the event,
-- so a send found here is looked for on the homeserver before it is sent again.
CREATE TABLE appservice_send (
	txn_id     TEXT   PRIMARY KEY,
	room_id    TEXT   NOT NULL,
	sender     TEXT   NOT NULL,
	started_at BIGINT NOT NULL,
	event_id   TEXT
);

CREATE INDEX appservice_send_started_idx ON appservice_send (started_at);
