-- v1 -> v2: Direct chats waiting for the bot
-- A direct chat with an LM user (a ghost invited into an unlinked room, or !lm pm) is linked once the bot has
-- joined the DAG room, which comes later on the room's own path; the row says what to do then and survives a
-- restart in between.
CREATE TABLE bridge_pending_dm (
    dag_room_id  TEXT   PRIMARY KEY,
    lm_user_id   TEXT   NOT NULL,
    requested_by TEXT   NOT NULL,
    created_at   BIGINT NOT NULL
);
