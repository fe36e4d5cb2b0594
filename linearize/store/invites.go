package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/lmbridge/lmbridge/remote"
)

const (
	insertInviteQuery = `
		INSERT INTO lm_invite (event_id, room_id, target, room_version, pdu, stripped, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (event_id) DO NOTHING
	`
	undeliveredInvitesQuery = `
		SELECT i.event_id, i.room_id, i.target, i.room_version, i.pdu, i.stripped FROM lm_invite i
		WHERE NOT EXISTS (SELECT 1 FROM lm_invite_delivered d WHERE d.listener=$1 AND d.event_id=i.event_id)
		ORDER BY i.received_at
	`
	markInviteDeliveredQuery = `INSERT INTO lm_invite_delivered (listener, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`
	// An invite we countersigned that we have not seen in the room (in our log, or in a send_join answer's state) may
	// not be in the hub's log yet; one we have seen is, and a refusal then has another reason (a kick, a ban).
	unseenInviteQuery = `
	SELECT COUNT(*) FROM lm_invite i WHERE i.room_id=$1 AND i.target=$2
		AND NOT EXISTS (SELECT 1 FROM lm_event e WHERE e.event_id=i.event_id)
		AND NOT EXISTS (SELECT 1 FROM lm_outlier o WHERE o.event_id=i.event_id)
`
	inviteEventQuery = `SELECT pdu FROM lm_invite WHERE room_id=$1 AND target=$2 ORDER BY received_at DESC LIMIT 1`
)

// PutInvite keeps an invite we countersigned, for the listeners.
func (s *Store) PutInvite(ctx context.Context, inv *remote.Invite, now int64) error {
	stripped, err := json.Marshal(inv.StrippedState)
	if err != nil {
		return fmt.Errorf("failed to encode stripped state: %w", err)
	}
	_, err = s.exec(ctx, insertInviteQuery, inv.EventID, inv.RoomID, inv.Target, inv.RoomVersion, string(inv.Event),
		string(stripped), now)
	if err != nil {
		return fmt.Errorf("failed to store invite %s: %w", inv.EventID, err)
	}
	return nil
}

// UndeliveredInvites returns the invites not yet delivered to listener, oldest first. Only the fields stored are set.
func (s *Store) UndeliveredInvites(ctx context.Context, listener string) ([]*remote.Invite, error) {
	rows, err := s.db.Query(ctx, undeliveredInvitesQuery, listener)
	if err != nil {
		return nil, fmt.Errorf("failed to read invites: %w", err)
	}
	defer rows.Close()
	var out []*remote.Invite
	for rows.Next() {
		var inv remote.Invite
		var raw, stripped string
		if err := rows.Scan(&inv.EventID, &inv.RoomID, &inv.Target, &inv.RoomVersion, &raw, &stripped); err != nil {
			return nil, fmt.Errorf("failed to scan invite: %w", err)
		}
		inv.Event = json.RawMessage(raw)
		if err := json.Unmarshal([]byte(stripped), &inv.StrippedState); err != nil {
			return nil, fmt.Errorf("failed to decode stripped state of %s: %w", inv.EventID, err)
		}
		out = append(out, &inv)
	}
	return out, rows.Err()
}

// MarkInviteDelivered records that listener has been told of an invite.
func (s *Store) MarkInviteDelivered(ctx context.Context, listener, eventID string) error {
	_, err := s.exec(ctx, markInviteDeliveredQuery, listener, eventID)
	if err != nil {
		return fmt.Errorf("failed to mark invite %s delivered: %w", eventID, err)
	}
	return nil
}

// UnseenInvite reports whether an invite of userID into roomID is kept that is neither in the log nor an outlier.
func (s *Store) UnseenInvite(ctx context.Context, roomID, userID string) (bool, error) {
	var n int
	if err := s.db.QueryRow(ctx, unseenInviteQuery, roomID, userID).Scan(&n); err != nil {
		return false, fmt.Errorf("failed to look up invites of %s to %s: %w", userID, roomID, err)
	}
	return n > 0, nil
}

// InviteEvent returns the latest invite of userID into roomID as received, or an error (sql.ErrNoRows when none).
func (s *Store) InviteEvent(ctx context.Context, roomID, userID string) (json.RawMessage, error) {
	var raw string
	if err := s.db.QueryRow(ctx, inviteEventQuery, roomID, userID).Scan(&raw); err != nil {
		return nil, err
	}
	return json.RawMessage(raw), nil
}
