-- v4 -> v5: Keep the highest seq sent to each destination
-- seq went on from the largest queued row, of which there is none once everything was delivered: a restart numbered
-- the outbox from 1 again. Each commit that deletes a destination's rows keeps the highest seq it deleted here, so the
-- largest of these and of the queued rows is the highest seq ever given.
ALTER TABLE lm_destination ADD COLUMN sent_up_to BIGINT NOT NULL DEFAULT 0;
