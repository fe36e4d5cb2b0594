-- v1 -> v2: Attachments (external parts)

-- A Matrix file sent to MIMI, sealed (draft-ietf-mimi-content external content: AEAD under a key only the message
-- carries), served to other providers under its ID for as long as the message may be read.
CREATE TABLE mimi_rooms_media_out (
	content_id TEXT   PRIMARY KEY,
	sealed     BYTEA  NOT NULL,
	created_at BIGINT NOT NULL
);

-- A MIMI external part brought to the homeserver: the same URL and content hash is not fetched or uploaded again.
CREATE TABLE mimi_rooms_media_in (
	url          TEXT   NOT NULL,
	content_hash BYTEA  NOT NULL,
	local_uri    TEXT   NOT NULL,
	size         BIGINT NOT NULL,
	created_at   BIGINT NOT NULL,
	PRIMARY KEY (url, content_hash)
);
