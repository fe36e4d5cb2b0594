-- v3 -> v4: Drop the table of LPDUs awaiting their echo
-- Nothing ever read it: an echo is recognised from memory (and verified in full after a restart), and the outbox
-- holds what the hub has not taken yet. Keeping it cost an insert and a delete of a random key per LPDU.
DROP TABLE IF EXISTS lm_pending_lpdu;
