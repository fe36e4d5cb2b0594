package bridgedb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

const (
	linkColumns       = `dag_room_id, lm_room_id, hub_server, role, status, pending_user, created_by, created_at, last_error, last_error_at, protocol`
	getLinkByDAGQuery = `SELECT ` + linkColumns + ` FROM bridge_link WHERE dag_room_id=$1`
	getLinkByLMQuery  = `SELECT ` + linkColumns + ` FROM bridge_link WHERE lm_room_id=$1`
	listLinksQuery    = `SELECT ` + linkColumns + ` FROM bridge_link ORDER BY created_at, dag_room_id`
	insertLinkQuery   = `INSERT INTO bridge_link (` + linkColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`
	deleteLinkQuery   = `DELETE FROM bridge_link WHERE dag_room_id=$1`
	setLinkErrorQuery = `UPDATE bridge_link SET last_error=$2, last_error_at=$3 WHERE dag_room_id=$1`
	activateLinkQuery = `UPDATE bridge_link SET status='active', pending_user='' WHERE dag_room_id=$1`
)

// Role is the bridge's role in the LM room of a link.
type Role string

const (
	// RoleHub means the LM room was created by us: we order its events.
	RoleHub Role = "hub"
	// RoleParticipant means another server is the hub; we send LPDUs to it.
	RoleParticipant Role = "participant"
)

// LinkStatus says whether a link carries events yet.
type LinkStatus string

const (
	// LinkActive carries events both ways.
	LinkActive LinkStatus = "active"
	// LinkPendingJoin is a portal room made for an LM invite, waiting for the invited Matrix user to join it.
	LinkPendingJoin LinkStatus = "pending_join"
)

// ErrLinkExists means one of the two rooms is already linked.
var ErrLinkExists = errors.New("room is already linked")

// The protocols a link's remote room can be on.
const (
	// ProtocolLM is Linearized Matrix (package linearize).
	ProtocolLM = "lm"
	// ProtocolMIMI is MIMI (package mimi/rooms).
	ProtocolMIMI = "mimi"
)

// Link joins a DAG room and a remote room (an LM room, or a MIMI room: Protocol says which; the LM-named fields hold
// the remote room's ID and hub either way).
type Link struct {
	DAGRoomID   id.RoomID  `json:"dag_room_id"`
	LMRoomID    string     `json:"lm_room_id"`
	HubServer   string     `json:"hub_server"`
	Role        Role       `json:"role"`
	Status      LinkStatus `json:"status"`
	PendingUser id.UserID  `json:"pending_user,omitempty"`
	CreatedBy   string     `json:"created_by"`
	CreatedAt   time.Time  `json:"created_at"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt time.Time  `json:"last_error_at,omitzero"`
	// Protocol is ProtocolMIMI, or empty for ProtocolLM: LM links read back and show in the provisioning API as they
	// did before links had a protocol.
	Protocol string `json:"protocol,omitempty"`
}

// ProtocolOrLM is the link's protocol, ProtocolLM when unset.
func (l *Link) ProtocolOrLM() string {
	if l.Protocol == "" {
		return ProtocolLM
	}
	return l.Protocol
}

// Scan implements dbutil.DataStruct.
func (l *Link) Scan(row dbutil.Scannable) (*Link, error) {
	var createdAt, lastErrorAt int64
	err := row.Scan(&l.DAGRoomID, &l.LMRoomID, &l.HubServer, &l.Role, &l.Status, &l.PendingUser, &l.CreatedBy,
		&createdAt, &l.LastError, &lastErrorAt, &l.Protocol)
	if err != nil {
		return nil, err
	}
	l.CreatedAt = time.UnixMilli(createdAt)
	if l.Protocol == ProtocolLM {
		l.Protocol = ""
	}
	if lastErrorAt != 0 {
		l.LastErrorAt = time.UnixMilli(lastErrorAt)
	}
	return l, nil
}

func (db *Database) getLink(ctx context.Context, query, arg string) (*Link, error) {
	l, err := db.links.QueryOne(ctx, query, arg)
	if err != nil {
		return nil, fmt.Errorf("failed to get link: %w", err)
	}
	return l, nil
}

// GetLinkByDAGRoom returns the link of a DAG room, or nil.
func (db *Database) GetLinkByDAGRoom(ctx context.Context, roomID id.RoomID) (*Link, error) {
	return db.getLink(ctx, getLinkByDAGQuery, string(roomID))
}

// GetLinkByLMRoom returns the link of an LM room, or nil.
func (db *Database) GetLinkByLMRoom(ctx context.Context, roomID string) (*Link, error) {
	return db.getLink(ctx, getLinkByLMQuery, roomID)
}

// ListLinks returns every link, oldest first.
func (db *Database) ListLinks(ctx context.Context) ([]*Link, error) {
	links, err := db.links.QueryMany(ctx, listLinksQuery)
	if err != nil {
		return nil, fmt.Errorf("failed to list links: %w", err)
	}
	return links, nil
}

// InsertLink stores a new link; ErrLinkExists when either room is linked already.
func (db *Database) InsertLink(ctx context.Context, l *Link) error {
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for _, check := range []func() (*Link, error){
			func() (*Link, error) { return db.GetLinkByDAGRoom(ctx, l.DAGRoomID) },
			func() (*Link, error) { return db.GetLinkByLMRoom(ctx, l.LMRoomID) },
		} {
			if existing, err := check(); err != nil {
				return err
			} else if existing != nil {
				return fmt.Errorf("%w: %s is linked to %s", ErrLinkExists, existing.DAGRoomID, existing.LMRoomID)
			}
		}
		var lastErrorAt int64
		if !l.LastErrorAt.IsZero() {
			lastErrorAt = l.LastErrorAt.UnixMilli()
		}
		_, err := db.Exec(ctx, insertLinkQuery, l.DAGRoomID, l.LMRoomID, l.HubServer, l.Role, l.Status, l.PendingUser,
			l.CreatedBy, l.CreatedAt.UnixMilli(), l.LastError, lastErrorAt, l.ProtocolOrLM())
		if err != nil {
			return fmt.Errorf("failed to insert link: %w", err)
		}
		return nil
	})
}

// DeleteLink removes the link of a DAG room and says whether there was one.
func (db *Database) DeleteLink(ctx context.Context, roomID id.RoomID) (bool, error) {
	res, err := db.Exec(ctx, deleteLinkQuery, roomID)
	if err != nil {
		return false, fmt.Errorf("failed to delete link: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("failed to count deleted links: %w", err)
	}
	return n > 0, nil
}

// SetLinkError records the last thing that went wrong on a link, for !lm status.
func (db *Database) SetLinkError(ctx context.Context, roomID id.RoomID, msg string, at time.Time) error {
	if _, err := db.Exec(ctx, setLinkErrorQuery, roomID, msg, at.UnixMilli()); err != nil {
		return fmt.Errorf("failed to record link error: %w", err)
	}
	return nil
}

// ActivateLink marks a pending portal link as carrying events.
func (db *Database) ActivateLink(ctx context.Context, roomID id.RoomID) error {
	if _, err := db.Exec(ctx, activateLinkQuery, roomID); err != nil {
		return fmt.Errorf("failed to activate link: %w", err)
	}
	return nil
}
