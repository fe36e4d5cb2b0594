-- v0 -> v1: The files fetched from LM servers and the homeserver copies they became
-- One row per LM server file uploaded to the homeserver, so that a file seen again (the same avatar in every
-- room, a forwarded image) is fetched once.
CREATE TABLE media_file (
    origin_uri TEXT   PRIMARY KEY,
    local_uri  TEXT   NOT NULL,
    mimetype   TEXT   NOT NULL,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
