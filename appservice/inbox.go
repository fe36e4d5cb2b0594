package appservice

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

const (
	insertTransactionQuery = `
		INSERT INTO appservice_transaction (txn_id, digest, received_at, event_count, new_events)
		VALUES ($1, $2, $3, $4, 0)
		ON CONFLICT (txn_id, digest) DO NOTHING
	`
	setTransactionNewEventsQuery = `
		UPDATE appservice_transaction SET new_events=$3 WHERE txn_id=$1 AND digest=$2
	`
	insertEventQuery = `
		INSERT INTO appservice_event (event_id, room_id, txn_id, received_at, event_json)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (event_id) DO NOTHING
	`
	pendingRoomsQuery = `
		SELECT DISTINCT room_id FROM appservice_event WHERE handled_at IS NULL
	`
	pendingEventsQuery = `
		SELECT seq, event_id, event_json, attempts FROM appservice_event
		WHERE room_id=$1 AND handled_at IS NULL AND seq>$2
		ORDER BY seq
		LIMIT $3
	`
	// A room's events are handled in seq order, so one statement marks what a pass handled; events given up on
	// already carry handled_at and keep their error.
	markHandledQuery = `
		UPDATE appservice_event SET handled_at=$4, attempts=attempts+1, last_error=NULL
		WHERE room_id=$1 AND seq>=$2 AND seq<=$3 AND handled_at IS NULL
	`
	markAttemptFailedQuery = `
		UPDATE appservice_event SET attempts=attempts+1, last_error=$2 WHERE seq=$1
	`
	// Handled events are kept a while so a transaction the homeserver retries late is still recognised; after that
	// the downstream dedup by event ID (dagview's stream) is what stops a repeat. Failed events are kept for the
	// operator.
	pruneEventsQuery = `
		DELETE FROM appservice_event WHERE handled_at IS NOT NULL AND handled_at < $1 AND last_error IS NULL
	`
	pruneTransactionsQuery = `
		DELETE FROM appservice_transaction WHERE received_at < $1
	`
	markGivenUpQuery = `
		UPDATE appservice_event SET handled_at=$2, attempts=attempts+1, last_error=$3 WHERE seq=$1
	`
)

// inbox is the durable store behind the transaction endpoint: what is in it has been acknowledged to the homeserver.
type inbox struct {
	db *dbutil.Database
	// insertLock makes the inbox's inserting transactions commit one after the other, so that events become visible
	// in the order of their seq: the room workers read past the last seq they handled and mark handled events by
	// seq range, which would skip an event whose transaction took a smaller seq but committed later. SQLite's single
	// writer orders them anyway; PostgreSQL assigns identity values at insert time and commits concurrently.
	insertLock sync.Mutex
}

// inboxEvent is a stored event still waiting for its handler.
type inboxEvent struct {
	seq      int64
	eventID  id.EventID
	json     string
	attempts int
}

// storeResult says what a stored transaction changed.
type storeResult struct {
	duplicate bool
	newEvents int
	rooms     []id.RoomID
}

// store writes the transaction and its events in one database transaction. Events already in the inbox (a retried
// transaction, or the same event delivered twice) are skipped by their event ID.
func (ib *inbox) store(ctx context.Context, txnID string, txn *parsedTransaction) (res storeResult, err error) {
	now := time.Now().UnixMilli()
	ib.insertLock.Lock()
	defer ib.insertLock.Unlock()
	err = ib.db.DoTxn(uninterruptible(ctx), nil, func(ctx context.Context) error {
		res = storeResult{}
		result, err := ib.db.Exec(ctx, insertTransactionQuery, txnID, txn.digest, now, len(txn.events))
		if err != nil {
			return fmt.Errorf("failed to insert transaction row: %w", err)
		}
		if n, err := result.RowsAffected(); err != nil {
			return fmt.Errorf("failed to count inserted transaction rows: %w", err)
		} else if n == 0 {
			res.duplicate = true
			return nil
		}
		seenRooms := make(map[id.RoomID]struct{})
		for _, evt := range txn.events {
			result, err = ib.db.Exec(ctx, insertEventQuery, evt.eventID, evt.roomID, txnID, now, string(evt.raw))
			if err != nil {
				return fmt.Errorf("failed to insert event %s: %w", evt.eventID, err)
			}
			n, err := result.RowsAffected()
			if err != nil {
				return fmt.Errorf("failed to count inserted event rows: %w", err)
			}
			if n == 0 {
				continue
			}
			res.newEvents++
			if _, ok := seenRooms[evt.roomID]; !ok {
				seenRooms[evt.roomID] = struct{}{}
				res.rooms = append(res.rooms, evt.roomID)
			}
		}
		if _, err = ib.db.Exec(ctx, setTransactionNewEventsQuery, txnID, txn.digest, res.newEvents); err != nil {
			return fmt.Errorf("failed to update transaction row: %w", err)
		}
		return nil
	})
	return
}

// uninterruptible drops ctx's cancellation for a few short statements that must finish together anyway: with a
// cancellable context mattn/go-sqlite3 runs every statement on a goroutine of its own so that it can interrupt it,
// which costs a goroutine hand-off per statement, and more than that on a loaded machine.
func uninterruptible(ctx context.Context) context.Context {
	return context.WithoutCancel(ctx)
}

// enqueue stores events that did not come in a transaction (catch-up through /messages); like store, it skips
// events already in the inbox.
func (ib *inbox) enqueue(ctx context.Context, source string, events []storedEvent) (rooms []id.RoomID, newEvents int, err error) {
	now := time.Now().UnixMilli()
	ib.insertLock.Lock()
	defer ib.insertLock.Unlock()
	err = ib.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		rooms, newEvents = nil, 0
		seenRooms := make(map[id.RoomID]struct{})
		for _, evt := range events {
			result, err := ib.db.Exec(ctx, insertEventQuery, evt.eventID, evt.roomID, source, now, string(evt.raw))
			if err != nil {
				return fmt.Errorf("failed to insert event %s: %w", evt.eventID, err)
			}
			if n, err := result.RowsAffected(); err != nil {
				return fmt.Errorf("failed to count inserted event rows: %w", err)
			} else if n > 0 {
				newEvents++
				if _, ok := seenRooms[evt.roomID]; !ok {
					seenRooms[evt.roomID] = struct{}{}
					rooms = append(rooms, evt.roomID)
				}
			}
		}
		return nil
	})
	return
}

func (ib *inbox) pendingRooms(ctx context.Context) ([]id.RoomID, error) {
	rows, err := ib.db.Query(ctx, pendingRoomsQuery)
	return dbutil.NewRowIterWithError(rows, dbutil.ScanSingleColumn[id.RoomID], err).AsList()
}

// pending reads up to limit of a room's unhandled events after seq after, in order.
func (ib *inbox) pending(ctx context.Context, roomID id.RoomID, after int64, limit int) ([]inboxEvent, error) {
	rows, err := ib.db.Query(uninterruptible(ctx), pendingEventsQuery, roomID, after, limit)
	return dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (ie inboxEvent, err error) {
		err = row.Scan(&ie.seq, &ie.eventID, &ie.json, &ie.attempts)
		return
	}, err).AsList()
}

// markHandled marks a room's unhandled events from seq first to last as handled.
func (ib *inbox) markHandled(ctx context.Context, roomID id.RoomID, first, last int64) error {
	if _, err := ib.db.Exec(ctx, markHandledQuery, roomID, first, last, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("failed to mark events handled: %w", err)
	}
	return nil
}

func (ib *inbox) markAttemptFailed(ctx context.Context, seq int64, handlerErr error) error {
	_, err := ib.db.Exec(ctx, markAttemptFailedQuery, seq, handlerErr.Error())
	return err
}

func (ib *inbox) markGivenUp(ctx context.Context, seq int64, handlerErr error) error {
	_, err := ib.db.Exec(ctx, markGivenUpQuery, seq, time.Now().UnixMilli(), handlerErr.Error())
	return err
}

// prune removes handled events and transactions older than cutoff.
func (ib *inbox) prune(ctx context.Context, cutoff time.Time) (int64, error) {
	var removed int64
	err := ib.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		result, err := ib.db.Exec(ctx, pruneEventsQuery, cutoff.UnixMilli())
		if err != nil {
			return fmt.Errorf("failed to prune events: %w", err)
		}
		removed, _ = result.RowsAffected()
		if _, err = ib.db.Exec(ctx, pruneTransactionsQuery, cutoff.UnixMilli()); err != nil {
			return fmt.Errorf("failed to prune transactions: %w", err)
		}
		return nil
	})
	return removed, err
}
