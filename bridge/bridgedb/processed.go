package bridgedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

const (
	// An event that crossed has its row in bridge_event and none here: one write per bridged event, not two.
	isProcessedDAGQuery = `SELECT outcome FROM bridge_processed WHERE origin='dag' AND event_id=$1
		UNION ALL SELECT 'bridged' FROM bridge_event WHERE dag_event_id=$1 LIMIT 1`
	isProcessedLMQuery = `SELECT outcome FROM bridge_processed WHERE origin='lm' AND event_id=$1
		UNION ALL SELECT 'bridged' FROM bridge_event WHERE lm_event_id=$1 LIMIT 1`
	markProcessedQuery = `INSERT INTO bridge_processed (origin, event_id, outcome, processed_at) VALUES ($1, $2, $3, $4) ON CONFLICT (origin, event_id) DO NOTHING`
)

// Outcome says what the bridge did with an event.
type Outcome string

const (
	// OutcomeBridged means the event crossed.
	OutcomeBridged Outcome = "bridged"
	// OutcomeSkipped means the event was not meant to cross: an echo, a command, a room without a link.
	OutcomeSkipped Outcome = "skipped"
	// OutcomeFailed means the event could not cross and its sender was told why.
	OutcomeFailed Outcome = "failed"
)

// Processed returns the outcome of an event handled before, or "" for a new one: an event with a mapping crossed,
// any other outcome is marked by MarkProcessed.
func (db *Database) Processed(ctx context.Context, origin Origin, eventID string) (Outcome, error) {
	query := isProcessedDAGQuery
	if origin == OriginLM {
		query = isProcessedLMQuery
	}
	var outcome Outcome
	err := db.QueryRow(ctx, query, eventID).Scan(&outcome)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("failed to check processed event: %w", err)
	}
	return outcome, nil
}

// MarkProcessed records that an event was handled without crossing (or crossed without a mapping of its own); a
// second mark for the same event keeps the first.
func (db *Database) MarkProcessed(ctx context.Context, origin Origin, eventID string, outcome Outcome, at time.Time) error {
	if _, err := db.Exec(ctx, markProcessedQuery, origin, eventID, outcome, at.UnixMilli()); err != nil {
		return fmt.Errorf("failed to mark event processed: %w", err)
	}
	return nil
}
