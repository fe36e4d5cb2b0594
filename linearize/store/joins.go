package store

import (
	"context"
	"encoding/json"
	"fmt"

	"go.mau.fi/util/dbutil"
)

const (
	upsertJoinQuery = `
		INSERT INTO lm_join (room_id, user_id, lpdu, room_version, started_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (room_id) DO UPDATE SET user_id=excluded.user_id, lpdu=excluded.lpdu, room_version=excluded.room_version
	`
	deleteJoinQuery    = `DELETE FROM lm_join WHERE room_id=$1`
	storedJoinsQuery   = `SELECT room_id, user_id, lpdu, room_version FROM lm_join`
	storedJoinQuery    = `SELECT room_id, user_id, lpdu, room_version FROM lm_join WHERE room_id=$1`
	lastPendingQuery   = `SELECT COALESCE(MAX(seq), 0) FROM lm_join_pending WHERE room_id=$1`
	insertPendingQuery = `
		INSERT INTO lm_join_pending (room_id, seq, event_id, pdu, received_at) VALUES ($1, $2, $3, $4, $5)
	`
	pendingQuery       = `SELECT seq, pdu FROM lm_join_pending WHERE room_id=$1 ORDER BY seq LIMIT $2`
	deletePendingQuery = `DELETE FROM lm_join_pending WHERE room_id=$1 AND seq<=$2`
	dropPendingQuery   = `DELETE FROM lm_join_pending WHERE room_id=$1`
	pendingRoomsQuery  = `SELECT DISTINCT room_id FROM lm_join_pending`
)

// Join is a join whose send_join had not been answered when it was last written: lm_join.
type Join struct {
	RoomID, UserID, RoomVersion string
	LPDU                        json.RawMessage
}

// Scan implements dbutil.DataStruct.
func (j *Join) Scan(row dbutil.Scannable) (*Join, error) {
	var lpdu string
	if err := row.Scan(&j.RoomID, &j.UserID, &lpdu, &j.RoomVersion); err != nil {
		return nil, err
	}
	j.LPDU = json.RawMessage(lpdu)
	return j, nil
}

// PutJoin records the join LPDU about to go to send_join in roomID, replacing the room's earlier one.
func (s *Store) PutJoin(ctx context.Context, j *Join, now int64) error {
	if _, err := s.exec(ctx, upsertJoinQuery, j.RoomID, j.UserID, string(j.LPDU), j.RoomVersion, now); err != nil {
		return fmt.Errorf("failed to record the join of %s to %s: %w", j.UserID, j.RoomID, err)
	}
	return nil
}

// GetJoin returns the join in flight in roomID, or nil.
func (s *Store) GetJoin(ctx context.Context, roomID string) (*Join, error) {
	j, err := s.joinRows.QueryOne(ctx, storedJoinQuery, roomID)
	if err != nil {
		return nil, fmt.Errorf("failed to read the join in flight in %s: %w", roomID, err)
	}
	return j, nil
}

// Joins returns every join in flight.
func (s *Store) Joins(ctx context.Context) ([]*Join, error) {
	joins, err := s.joinRows.QueryMany(ctx, storedJoinsQuery)
	if err != nil {
		return nil, fmt.Errorf("failed to read joins in flight: %w", err)
	}
	return joins, nil
}

// DeleteJoin forgets the join in flight in roomID.
func (s *Store) DeleteJoin(ctx context.Context, roomID string) error {
	if _, err := s.exec(ctx, deleteJoinQuery, roomID); err != nil {
		return fmt.Errorf("failed to forget the join in flight in %s: %w", roomID, err)
	}
	return nil
}

// LastPending returns the seq of the last PDU kept for roomID, 0 for none.
func (s *Store) LastPending(ctx context.Context, roomID string) (int64, error) {
	var seq int64
	if err := s.db.QueryRow(ctx, lastPendingQuery, roomID).Scan(&seq); err != nil {
		return 0, fmt.Errorf("failed to number the PDUs kept for %s: %w", roomID, err)
	}
	return seq, nil
}

// PutPending keeps a PDU that arrived while roomID's join was in flight, under seq.
func (s *Store) PutPending(ctx context.Context, roomID string, seq int64, eventID string, raw json.RawMessage, now int64) error {
	if _, err := s.exec(ctx, insertPendingQuery, roomID, seq, eventID, string(raw), now); err != nil {
		return fmt.Errorf("failed to keep %s until the join of %s completes: %w", eventID, roomID, err)
	}
	return nil
}

// Pending returns up to limit of the PDUs kept for roomID, in arrival order, and the seq of the last one.
func (s *Store) Pending(ctx context.Context, roomID string, limit int) ([]json.RawMessage, int64, error) {
	rows, err := s.db.Query(ctx, pendingQuery, roomID, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("failed to read the PDUs kept for %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []json.RawMessage
	var last int64
	for rows.Next() {
		var raw string
		if err = rows.Scan(&last, &raw); err != nil {
			return nil, 0, fmt.Errorf("failed to read the PDUs kept for %s: %w", roomID, err)
		}
		out = append(out, json.RawMessage(raw))
	}
	if err = rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("failed to read the PDUs kept for %s: %w", roomID, err)
	}
	return out, last, nil
}

// DeletePending deletes the PDUs kept for roomID up to seq last.
func (s *Store) DeletePending(ctx context.Context, roomID string, last int64) error {
	if _, err := s.exec(ctx, deletePendingQuery, roomID, last); err != nil {
		return fmt.Errorf("failed to delete the PDUs kept for %s: %w", roomID, err)
	}
	return nil
}

// DropPending deletes every PDU kept for roomID.
func (s *Store) DropPending(ctx context.Context, roomID string) error {
	if _, err := s.exec(ctx, dropPendingQuery, roomID); err != nil {
		return fmt.Errorf("failed to drop the PDUs kept for %s: %w", roomID, err)
	}
	return nil
}

// PendingRooms returns the rooms with PDUs kept.
func (s *Store) PendingRooms(ctx context.Context) ([]string, error) {
	rows, err := s.db.Query(ctx, pendingRoomsQuery)
	if err != nil {
		return nil, fmt.Errorf("failed to read rooms with kept PDUs: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var roomID string
		if err = rows.Scan(&roomID); err != nil {
			return nil, fmt.Errorf("failed to read rooms with kept PDUs: %w", err)
		}
		out = append(out, roomID)
	}
	return out, rows.Err()
}
