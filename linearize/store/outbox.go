package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"go.mau.fi/util/dbutil"
)

const (
	insertOutboxQuery = `INSERT INTO lm_outbox (destination, seq, room_id, event_id, lpdu) VALUES ($1, $2, $3, $4, $5)`
	// Every seq given is in a queued row, or was deleted by a commit that kept it as its destination's sent_up_to.
	maxOutboxSeqQuery = `
		SELECT MAX(seq) FROM (
			SELECT COALESCE(MAX(seq), 0) AS seq FROM lm_outbox
			UNION ALL SELECT COALESCE(MAX(sent_up_to), 0) FROM lm_destination
		) AS seqs
	`
	outboxDestsQuery = `SELECT DISTINCT destination FROM lm_outbox`
	outboxBatchQuery = `
		SELECT seq, room_id, event_id, COALESCE(lpdu, ''), lpdu IS NOT NULL FROM lm_outbox
		WHERE destination=$1 AND seq<=$2 ORDER BY seq LIMIT $3
	`
	outboxRoomsQuery    = `SELECT DISTINCT room_id, lpdu IS NOT NULL FROM lm_outbox WHERE destination=$1`
	outboxEventIDsQuery = `SELECT seq, event_id FROM lm_outbox WHERE destination=$1`
	roomQueuedQuery     = `SELECT COUNT(*) FROM lm_outbox WHERE destination=$1 AND room_id=$2`
	deleteOutboxQuery   = `DELETE FROM lm_outbox WHERE destination=$1 AND seq<=$2`
	getDestQuery        = `SELECT txn_last_seq, retry_count, next_attempt FROM lm_destination WHERE destination=$1`
	destStatusQuery     = `SELECT retry_count, next_attempt, COALESCE(last_error, '') FROM lm_destination WHERE destination=$1`
	// sent_up_to only goes up: callers that delete no rows pass 0.
	upsertDestQuery = `
		INSERT INTO lm_destination (destination, txn_last_seq, retry_count, next_attempt, last_error, sent_up_to)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (destination) DO UPDATE SET txn_last_seq=excluded.txn_last_seq, retry_count=excluded.retry_count,
			next_attempt=excluded.next_attempt, last_error=excluded.last_error,
			sent_up_to=CASE WHEN excluded.sent_up_to > lm_destination.sent_up_to
				THEN excluded.sent_up_to ELSE lm_destination.sent_up_to END
	`
	// The in-flight mark of an idle destination (txn_last_seq 0) set to $2; a busy one keeps its own.
	markIdleDestQuery = `
		INSERT INTO lm_destination (destination, txn_last_seq, retry_count, next_attempt) VALUES ($1, $2, 0, 0)
		ON CONFLICT (destination) DO UPDATE SET txn_last_seq=excluded.txn_last_seq WHERE lm_destination.txn_last_seq=0
	`
	// The mark cleared if it is still the ended transaction's; the seqs deleted kept either way.
	endDestTxnQuery = `
		UPDATE lm_destination SET txn_last_seq=CASE WHEN txn_last_seq=$2 THEN 0 ELSE txn_last_seq END,
			sent_up_to=CASE WHEN sent_up_to < $2 THEN $2 ELSE sent_up_to END
		WHERE destination=$1
	`
	resetBackoffQuery = `UPDATE lm_destination SET next_attempt=0, retry_count=0 WHERE ($1='' OR destination=$1) AND next_attempt>$2`
)

var insertOutboxBuilder = dbutil.NewMassInsertBuilder[OutboxRow, [0]any, [5]any](insertOutboxQuery, "($%d, $%d, $%d, $%d, $%d)")

// OutboxRow is one lm_outbox row to insert.
type OutboxRow struct {
	Destination, RoomID, EventID string
	Seq                          int64
	// LPDU is nil for a log event to fan out.
	LPDU any
}

// GetMassInsertValues implements dbutil.MassInsertable.
func (r OutboxRow) GetMassInsertValues() [5]any {
	return [5]any{r.Destination, r.Seq, r.RoomID, r.EventID, r.LPDU}
}

// InsertOutbox queues rows in one statement.
func (s *Store) InsertOutbox(ctx context.Context, rows []OutboxRow) error {
	return massInsert(ctx, s, insertOutboxBuilder, rows)
}

// OutboxItem is one queued row with the body to send.
type OutboxItem struct {
	Seq     int64
	RoomID  string
	EventID string
	Body    json.RawMessage
	IsLPDU  bool
	// Held means Body came from the fan-out bodies, to be released once sent.
	Held bool
}

// Bodies are the PDUs held in memory for fan-out, by event ID.
type Bodies interface {
	Get(eventID string) (json.RawMessage, bool)
}

// MaxOutboxSeq returns the last seq given to an outbox row.
func (s *Store) MaxOutboxSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.db.QueryRow(ctx, maxOutboxSeqQuery).Scan(&seq); err != nil {
		return 0, fmt.Errorf("failed to read outbox sequence: %w", err)
	}
	return seq, nil
}

// OutboxDestinations returns the destinations with rows queued.
func (s *Store) OutboxDestinations(ctx context.Context) ([]string, error) {
	rows, err := s.db.Query(ctx, outboxDestsQuery)
	if err != nil {
		return nil, fmt.Errorf("failed to list outbox destinations: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// OutboxRooms returns the rooms destination has rows queued for, and whether any of them is an LPDU.
func (s *Store) OutboxRooms(ctx context.Context, destination string) ([]string, bool, error) {
	rows, err := s.db.Query(ctx, outboxRoomsQuery, destination)
	if err != nil {
		return nil, false, fmt.Errorf("failed to list the rooms queued for %s: %w", destination, err)
	}
	defer rows.Close()
	var rooms []string
	lpdus := false
	for rows.Next() {
		var roomID string
		var lpdu bool
		if err := rows.Scan(&roomID, &lpdu); err != nil {
			return nil, false, fmt.Errorf("failed to scan the rooms queued for %s: %w", destination, err)
		}
		rooms = append(rooms, roomID)
		lpdus = lpdus || lpdu
	}
	return rooms, lpdus, rows.Err()
}

// OutboxEventIDs returns the event IDs of destination's queued rows and their highest seq.
func (s *Store) OutboxEventIDs(ctx context.Context, destination string) ([]string, int64, error) {
	rows, err := s.db.Query(ctx, outboxEventIDsQuery, destination)
	if err != nil {
		return nil, 0, fmt.Errorf("failed to read the outbox of %s: %w", destination, err)
	}
	defer rows.Close()
	var ids []string
	var last int64
	for rows.Next() {
		var seq int64
		var id string
		if err := rows.Scan(&seq, &id); err != nil {
			return nil, 0, fmt.Errorf("failed to scan the outbox of %s: %w", destination, err)
		}
		ids = append(ids, id)
		last = max(last, seq)
	}
	return ids, last, rows.Err()
}

// RoomQueued counts the rows of roomID queued for destination.
func (s *Store) RoomQueued(ctx context.Context, destination, roomID string) (int, error) {
	var n int
	if err := s.db.QueryRow(ctx, roomQueuedQuery, destination, roomID).Scan(&n); err != nil {
		return 0, fmt.Errorf("failed to count the outbox of %s: %w", destination, err)
	}
	return n, nil
}

// OutboxBatch reads up to limit outbox rows of destination up to seq maxSeq, ending before the row that would make
// more than maxLPDUs LPDUs, with the bodies of log events taken from bodies where held, else read from the log in one
// query. The same rows give the same batch, so a retry after a crash sends the same transaction.
func (s *Store) OutboxBatch(ctx context.Context, destination string, maxSeq int64, limit, maxLPDUs int, bodies Bodies) ([]OutboxItem, error) {
	rows, err := s.db.Query(ctx, outboxBatchQuery, destination, maxSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("failed to read outbox of %s: %w", destination, err)
	}
	defer rows.Close()
	var out []OutboxItem
	var missing []string
	lpdus := 0
	for rows.Next() {
		var it OutboxItem
		var body string
		if err := rows.Scan(&it.Seq, &it.RoomID, &it.EventID, &body, &it.IsLPDU); err != nil {
			return nil, fmt.Errorf("failed to scan outbox of %s: %w", destination, err)
		}
		if it.IsLPDU {
			if lpdus++; lpdus > maxLPDUs {
				break
			}
			it.Body = json.RawMessage(body)
		} else if it.Body, it.Held = bodies.Get(it.EventID); !it.Held {
			missing = append(missing, it.EventID)
		}
		out = append(out, it)
	}
	if err = rows.Err(); err != nil || len(missing) == 0 {
		return out, err
	}
	found, err := s.eventBodies(ctx, missing)
	if err != nil {
		return nil, fmt.Errorf("failed to read outbox events of %s: %w", destination, err)
	}
	for i := range out {
		if !out[i].IsLPDU && !out[i].Held {
			// An event missing from the log (a batch writes both in one transaction) goes out empty.
			out[i].Body = found[out[i].EventID]
		}
	}
	return out, nil
}

// DeleteOutbox deletes destination's rows up to seq upTo.
func (s *Store) DeleteOutbox(ctx context.Context, destination string, upTo int64) error {
	_, err := s.exec(ctx, deleteOutboxQuery, destination, upTo)
	if err != nil {
		return fmt.Errorf("failed to clear outbox of %s: %w", destination, err)
	}
	return nil
}

// Dest is a destination's lm_destination row.
type Dest struct {
	TxnLastSeq  int64
	RetryCount  int
	NextAttempt int64
	// SentUpTo is set by a write that deletes rows to the highest seq it deletes. Once a destination's rows are all
	// delivered, it is all that says which seqs were given, so that a restart does not give them again; the
	// destination's row is written by that commit anyway, so keeping it costs no statement or page of its own.
	SentUpTo int64
}

// GetDest reads a destination's row; a destination without one is idle and due.
func (s *Store) GetDest(ctx context.Context, destination string) (Dest, error) {
	var d Dest
	err := s.db.QueryRow(ctx, getDestQuery, destination).Scan(&d.TxnLastSeq, &d.RetryCount, &d.NextAttempt)
	if errors.Is(err, sql.ErrNoRows) {
		return Dest{}, nil
	} else if err != nil {
		return d, fmt.Errorf("failed to read destination %s: %w", destination, err)
	}
	return d, nil
}

// PutDest writes a destination's row, with lastErr as its last error ("" for none).
func (s *Store) PutDest(ctx context.Context, destination string, d Dest, lastErr string) error {
	_, err := s.exec(ctx, upsertDestQuery, destination, d.TxnLastSeq, d.RetryCount, d.NextAttempt, nullString(lastErr), d.SentUpTo)
	if err != nil {
		return fmt.Errorf("failed to store destination %s: %w", destination, err)
	}
	return nil
}

// DestStatus returns a destination's retry count, next attempt (Unix ms, 0 for none) and last error; all zero when
// it has no row.
func (s *Store) DestStatus(ctx context.Context, destination string) (int, int64, string, error) {
	var retries int
	var nextAttempt int64
	var lastErr string
	err := s.db.QueryRow(ctx, destStatusQuery, destination).Scan(&retries, &nextAttempt, &lastErr)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, 0, "", fmt.Errorf("failed to read the state of %s: %w", destination, err)
	}
	return retries, nextAttempt, lastErr, nil
}

// EndAcked writes the deferred end of destination's transaction up to last: its rows deleted, last kept as sent and,
// unless the worker has marked the next one already, the destination idle.
func (s *Store) EndAcked(ctx context.Context, destination string, last int64) error {
	if err := s.DeleteOutbox(ctx, destination, last); err != nil {
		return err
	}
	if _, err := s.exec(ctx, endDestTxnQuery, destination, last); err != nil {
		return fmt.Errorf("failed to end the transaction to %s: %w", destination, err)
	}
	return nil
}

// MarkIdleDest marks the rows up to lastSeq as destination's next transaction unless one is in flight already. The
// transaction stays what the outbox reads for a mark: the first rows up to it, whatever their order of arrival, so a
// retry after a crash sends the same one.
func (s *Store) MarkIdleDest(ctx context.Context, destination string, lastSeq int64) error {
	if _, err := s.exec(ctx, markIdleDestQuery, destination, lastSeq); err != nil {
		return fmt.Errorf("failed to mark the next transaction to %s: %w", destination, err)
	}
	return nil
}

// ResetBackoff makes destination ("" for every one) due now if its next attempt is after notAfter (Unix ms), and
// reports whether a row changed.
func (s *Store) ResetBackoff(ctx context.Context, destination string, notAfter int64) (bool, error) {
	res, err := s.exec(ctx, resetBackoffQuery, destination, notAfter)
	if err != nil {
		return false, fmt.Errorf("failed to reset backoff: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}
