package store

import (
	"context"
	"database/sql"
	"fmt"

	"go.mau.fi/util/dbutil"
)

const (
	insertRoomQuery = `
		INSERT INTO lm_room (room_id, room_version, hub_server, role, status, created_at) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (room_id) DO UPDATE SET hub_server=excluded.hub_server, role=excluded.role, status=excluded.status
	`
	setRoomStatusQuery = `UPDATE lm_room SET status=$2 WHERE room_id=$1`
	// A join that did not complete: a room we hold events of goes back to active, one we never joined is forgotten.
	reviveJoiningQuery = `
		UPDATE lm_room SET status='active'
		WHERE status='joining' AND ($1='' OR room_id=$1) AND EXISTS (SELECT 1 FROM lm_event WHERE lm_event.room_id=lm_room.room_id)
	`
	forgetJoiningQuery = `DELETE FROM lm_room WHERE status='joining' AND ($1='' OR room_id=$1)`
	getRoomQuery       = `SELECT room_id, room_version, hub_server, role, status FROM lm_room WHERE room_id=$1`
	listRoomsQuery     = `SELECT room_id, room_version, hub_server, role, status FROM lm_room`
)

// Room roles and statuses as stored in lm_room.
const (
	RoleHub         = "hub"
	RoleParticipant = "participant"

	StatusJoining = "joining"
	StatusActive  = "active"
)

// RoomInfo is what the engine knows about one LM room.
type RoomInfo struct {
	RoomID      string
	RoomVersion string
	HubServer   string
	// Role is RoleHub or RoleParticipant.
	Role string
	// Status is StatusJoining while our join is in flight, else StatusActive.
	Status string
}

// Scan implements dbutil.DataStruct.
func (r *RoomInfo) Scan(row dbutil.Scannable) (*RoomInfo, error) {
	return dbutil.ValueOrErr(r, row.Scan(&r.RoomID, &r.RoomVersion, &r.HubServer, &r.Role, &r.Status))
}

// writeRoom runs a statement that changes lm_room, keeping the room cache right.
func (s *Store) writeRoom(ctx context.Context, query string, args ...any) (sql.Result, error) {
	var res sql.Result
	err := s.Write(ctx, func(ctx context.Context) error {
		s.roomChanged()
		var err error
		res, err = s.db.Exec(ctx, query, args...)
		return err
	})
	return res, err
}

// GetRoom returns a room's row, or nil.
func (s *Store) GetRoom(ctx context.Context, roomID string) (*RoomInfo, error) {
	if r, ok := s.rooms.Load(roomID); ok {
		info := *r.(*RoomInfo)
		return &info, nil
	}
	gen := s.roomGen.Load()
	r, err := s.roomRows.QueryOne(ctx, getRoomQuery, roomID)
	if err != nil {
		return nil, fmt.Errorf("failed to get room %s: %w", roomID, err)
	} else if r == nil {
		return nil, nil
	}
	// Only settled rooms are cached: a joining room changes status within moments.
	if ctx.Value(inWriteKey{}) == nil && r.Status == StatusActive {
		cached := *r
		s.cacheLock.Lock()
		if s.roomGen.Load() == gen {
			s.rooms.Store(roomID, &cached)
		}
		s.cacheLock.Unlock()
	}
	return r, nil
}

// roomChanged is called by every write to lm_room, with the write lock held.
func (s *Store) roomChanged() {
	s.roomWritten = true
	s.clearRooms()
}

// clearRooms empties the room cache; a reader that queried before it cannot store its now stale row after it.
func (s *Store) clearRooms() {
	s.cacheLock.Lock()
	s.roomGen.Add(1)
	s.rooms.Clear()
	s.cacheLock.Unlock()
}

// ListRooms returns every room's row.
func (s *Store) ListRooms(ctx context.Context) ([]*RoomInfo, error) {
	rooms, err := s.roomRows.QueryMany(ctx, listRoomsQuery)
	if err != nil {
		return nil, fmt.Errorf("failed to list rooms: %w", err)
	}
	return rooms, nil
}

// PutRoom writes a room's row; a room stored already keeps its version and creation time.
func (s *Store) PutRoom(ctx context.Context, r *RoomInfo, now int64) error {
	_, err := s.writeRoom(ctx, insertRoomQuery, r.RoomID, r.RoomVersion, r.HubServer, r.Role, r.Status, now)
	if err != nil {
		return fmt.Errorf("failed to store room %s: %w", r.RoomID, err)
	}
	return nil
}

// AbandonJoin undoes the joining marker of roomID ("" for every room, at start-up).
func (s *Store) AbandonJoin(ctx context.Context, roomID string) error {
	return s.Write(ctx, func(ctx context.Context) error {
		s.roomChanged()
		if _, err := s.db.Exec(ctx, reviveJoiningQuery, roomID); err != nil {
			return fmt.Errorf("failed to revive joining rooms: %w", err)
		}
		if _, err := s.db.Exec(ctx, forgetJoiningQuery, roomID); err != nil {
			return fmt.Errorf("failed to forget joining rooms: %w", err)
		}
		return nil
	})
}

// SetRoomStatus sets a room's status.
func (s *Store) SetRoomStatus(ctx context.Context, roomID, status string) error {
	_, err := s.writeRoom(ctx, setRoomStatusQuery, roomID, status)
	if err != nil {
		return fmt.Errorf("failed to set status of room %s: %w", roomID, err)
	}
	return nil
}
