-- v5 -> v6: Index the log by LPDU ID
-- A hub that receives an LPDU it has completed already, in a transaction under another txnId (from a participant
-- restored from a backup, or upgraded across a change of txnIds), answers it without appending it twice; the lookup
-- needs the index (the membership LPDUs of send_join and send_leave are looked up the same way). The hub's own events,
-- which have no LPDU ID, stay out of it.
CREATE INDEX lm_event_lpdu_idx ON lm_event (lpdu_id) WHERE lpdu_id IS NOT NULL;
