package bridgedb

import (
	"context"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

const (
	putPendingDMQuery = `INSERT INTO bridge_pending_dm (dag_room_id, lm_user_id, requested_by, created_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (dag_room_id) DO NOTHING`
	getPendingDMQuery    = `SELECT dag_room_id, lm_user_id, requested_by, created_at FROM bridge_pending_dm WHERE dag_room_id=$1`
	deletePendingDMQuery = `DELETE FROM bridge_pending_dm WHERE dag_room_id=$1`
)

// PendingDM is a direct chat with an LM user waiting for the bot to join its DAG room.
type PendingDM struct {
	DAGRoomID   id.RoomID
	LMUserID    string
	RequestedBy id.UserID
	CreatedAt   time.Time
}

// Scan implements dbutil.DataStruct.
func (p *PendingDM) Scan(row dbutil.Scannable) (*PendingDM, error) {
	var created int64
	if err := row.Scan(&p.DAGRoomID, &p.LMUserID, &p.RequestedBy, &created); err != nil {
		return dbutil.ValueOrErr(p, err)
	}
	p.CreatedAt = time.UnixMilli(created)
	return p, nil
}

// PutPendingDM records a direct chat waiting for the bot; a room that has one already keeps it.
func (db *Database) PutPendingDM(ctx context.Context, p *PendingDM) error {
	if _, err := db.Exec(ctx, putPendingDMQuery, p.DAGRoomID, p.LMUserID, p.RequestedBy, p.CreatedAt.UnixMilli()); err != nil {
		return fmt.Errorf("failed to store pending direct chat: %w", err)
	}
	return nil
}

// GetPendingDM returns the direct chat waiting in a DAG room, or nil.
func (db *Database) GetPendingDM(ctx context.Context, roomID id.RoomID) (*PendingDM, error) {
	p, err := db.pendingDMs.QueryOne(ctx, getPendingDMQuery, roomID)
	if err != nil {
		return nil, fmt.Errorf("failed to get pending direct chat: %w", err)
	}
	return p, nil
}

// DeletePendingDM forgets the direct chat waiting in a DAG room.
func (db *Database) DeletePendingDM(ctx context.Context, roomID id.RoomID) error {
	if _, err := db.Exec(ctx, deletePendingDMQuery, roomID); err != nil {
		return fmt.Errorf("failed to delete pending direct chat: %w", err)
	}
	return nil
}
