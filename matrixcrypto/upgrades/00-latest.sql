-- v0 -> v1: Latest revision
-- The bot device's outbound Megolm sessions, kept after mautrix's store replaces them (a rotation, a member's new
-- device), pickled with the pickle key: their signing key lets the bridge answer a key request for one of them with
-- an m.room_key, which clients that take forwarded keys only from their own devices (matrix-sdk-crypto) accept.
CREATE TABLE matrixcrypto_outbound_session (
	session_id TEXT   PRIMARY KEY,
	room_id    TEXT   NOT NULL,
	pickled    TEXT   NOT NULL,
	created_at BIGINT NOT NULL
);

CREATE INDEX matrixcrypto_outbound_session_created_idx ON matrixcrypto_outbound_session (created_at);

-- Events that could not be decrypted within the key wait, and whose room got a notice: if their key arrives later,
-- they are bridged then, once, and the row goes.
CREATE TABLE matrixcrypto_late_event (
	event_id   TEXT   PRIMARY KEY,
	room_id    TEXT   NOT NULL,
	session_id TEXT   NOT NULL,
	event_json TEXT   NOT NULL,
	failed_at  BIGINT NOT NULL
);

CREATE INDEX matrixcrypto_late_event_session_idx ON matrixcrypto_late_event (room_id, session_id);
CREATE INDEX matrixcrypto_late_event_failed_idx ON matrixcrypto_late_event (failed_at);
