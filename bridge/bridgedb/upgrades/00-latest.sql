-- v0 -> v1: Latest revision
CREATE TABLE bridge_link (
    dag_room_id   TEXT   PRIMARY KEY,
    lm_room_id    TEXT   NOT NULL UNIQUE,
    hub_server    TEXT   NOT NULL,
    role          TEXT   NOT NULL CHECK (role IN ('hub', 'participant')),
    status        TEXT   NOT NULL CHECK (status IN ('active', 'pending_join')),
    -- The Matrix user whose join to a portal room makes lmbridge join the LM room for them.
    pending_user  TEXT   NOT NULL DEFAULT '',
    created_by    TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    last_error    TEXT   NOT NULL DEFAULT '',
    last_error_at BIGINT NOT NULL DEFAULT 0
);

-- One row per event that crossed. lm_event_id stays NULL while an LPDU we sent as participant waits for the hub's
-- PDU; the echo fills it in through lpdu_id.
CREATE TABLE bridge_event (
    dag_room_id  TEXT   NOT NULL,
    dag_event_id TEXT   UNIQUE,
    lm_room_id   TEXT   NOT NULL,
    lm_event_id  TEXT   UNIQUE,
    lpdu_id      TEXT   UNIQUE,
    origin       TEXT   NOT NULL CHECK (origin IN ('dag', 'lm')),
    -- Who sent the original, on its own side: the one to tell when the other side refuses it.
    sender       TEXT   NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    CHECK (dag_event_id IS NOT NULL OR lm_event_id IS NOT NULL)
);

-- Every event the bridge has finished with, bridged or not, so that a redelivery is not handled twice.
CREATE TABLE bridge_processed (
    origin       TEXT   NOT NULL CHECK (origin IN ('dag', 'lm')),
    event_id     TEXT   NOT NULL,
    outcome      TEXT   NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (origin, event_id)
);

-- The profile last set on each ghost, so that a profile is only pushed to the homeserver when it changes.
CREATE TABLE bridge_ghost (
    lm_user_id  TEXT PRIMARY KEY,
    displayname TEXT NOT NULL,
    avatar_url  TEXT NOT NULL
);
