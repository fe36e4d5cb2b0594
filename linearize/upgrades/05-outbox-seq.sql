-- v4 -> v5: Keep the outbox's highest seq
-- seq went on from the largest queued row, of which there is none once everything was delivered: a restart numbered
-- the outbox from 1 again. The highest seq given is kept here instead, written by the commit that gives it.
CREATE TABLE lm_outbox_seq (
	seq BIGINT NOT NULL
);
INSERT INTO lm_outbox_seq (seq) SELECT COALESCE(MAX(seq), 0) FROM lm_outbox;
