package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

const (
	getReceivedTxnQuery    = `SELECT response FROM lm_received_txn WHERE origin=$1 AND txn_id=$2`
	insertReceivedTxnQuery = `INSERT INTO lm_received_txn (origin, txn_id, response, received_at) VALUES ($1, $2, $3, $4)`
	// Row-value IN works in SQLite and PostgreSQL alike, where DELETE … LIMIT does not.
	pruneReceivedTxnQuery = `
	DELETE FROM lm_received_txn WHERE (origin, txn_id) IN (
		SELECT origin, txn_id FROM lm_received_txn WHERE received_at < $1 LIMIT $2
	)`
	getSendKeyQuery    = `SELECT event_id FROM lm_send_key WHERE room_id=$1 AND send_key=$2`
	insertSendKeyQuery = `INSERT INTO lm_send_key (room_id, send_key, event_id, sent_at) VALUES ($1, $2, $3, $4)`
)

// ReceivedTxn returns our answer to a /send transaction received before, or nil.
func (s *Store) ReceivedTxn(ctx context.Context, origin, txnID string) (json.RawMessage, error) {
	var resp string
	err := s.db.QueryRow(ctx, getReceivedTxnQuery, origin, txnID).Scan(&resp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to look up transaction %s from %s: %w", txnID, origin, err)
	}
	return json.RawMessage(resp), nil
}

// PutReceivedTxn keeps our answer to a received /send transaction.
func (s *Store) PutReceivedTxn(ctx context.Context, origin, txnID string, resp json.RawMessage, now int64) error {
	_, err := s.exec(ctx, insertReceivedTxnQuery, origin, txnID, string(resp), now)
	if err != nil {
		return fmt.Errorf("failed to store transaction %s from %s: %w", txnID, origin, err)
	}
	return nil
}

// PruneReceivedTxns deletes up to limit of the answers kept from before cutoff (Unix ms) and returns how many.
func (s *Store) PruneReceivedTxns(ctx context.Context, cutoff int64, limit int) (int64, error) {
	res, err := s.exec(ctx, pruneReceivedTxnQuery, cutoff, limit)
	if err != nil {
		return 0, fmt.Errorf("failed to prune received transaction answers: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// SentWithKey returns the event or LPDU ID sent into roomID under an idempotency key, or "".
func (s *Store) SentWithKey(ctx context.Context, roomID, key string) (string, error) {
	var id string
	err := s.db.QueryRow(ctx, getSendKeyQuery, roomID, key).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("failed to look up send key %s in %s: %w", key, roomID, err)
	}
	return id, nil
}

// PutSendKey records the event or LPDU ID sent into roomID under an idempotency key.
func (s *Store) PutSendKey(ctx context.Context, roomID, key, eventID string, now int64) error {
	if _, err := s.exec(ctx, insertSendKeyQuery, roomID, key, eventID, now); err != nil {
		return fmt.Errorf("failed to store send key %s in %s: %w", key, roomID, err)
	}
	return nil
}
