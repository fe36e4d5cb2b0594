package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

const (
	getCursorQuery = `SELECT idx FROM lm_listener_cursor WHERE listener=$1 AND room_id=$2`
	setCursorQuery = `
		INSERT INTO lm_listener_cursor (listener, room_id, idx) VALUES ($1, $2, $3)
		ON CONFLICT (listener, room_id) DO UPDATE SET idx=excluded.idx
	`
)

// Cursor returns the log index up to which listener has been given roomID's events, 0 for none.
func (s *Store) Cursor(ctx context.Context, listener, roomID string) (int64, error) {
	var idx int64
	err := s.db.QueryRow(ctx, getCursorQuery, listener, roomID).Scan(&idx)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	} else if err != nil {
		return 0, fmt.Errorf("failed to read cursor of %s in %s: %w", listener, roomID, err)
	}
	return idx, nil
}

// SetCursor stores listener's cursor in roomID.
func (s *Store) SetCursor(ctx context.Context, listener, roomID string, idx int64) error {
	_, err := s.exec(ctx, setCursorQuery, listener, roomID, idx)
	if err != nil {
		return fmt.Errorf("failed to store cursor of %s in %s: %w", listener, roomID, err)
	}
	return nil
}
