// Package remote is the seam between the bridge and the protocol that carries a room beyond the homeserver:
// Linearized Matrix today (package linearize implements it), MIMI next to it. The bridge sees a remote room only
// through Rooms, hears from it through Listener, and classifies failures by this package's sentinels and PeerError,
// so a second protocol is a second implementation of Rooms, not a change to the bridge.
//
// What crosses the seam is described here in the protocol's own terms but without its wire forms: typed IDs, the
// requests Rooms takes, the events and invites a Listener receives, the state and delivery reports.
package remote

import (
	"context"
	"time"
)

// RoomID, UserID, EventID and ServerName are a remote protocol's identifiers (for LM, Matrix-style !room:server,
// @user:server, $event and server names). Distinct types, so that one cannot be passed for another.
type (
	RoomID     string
	UserID     string
	EventID    string
	ServerName string
)

// Rooms is the remote side of the bridge: the rooms of one protocol, acted on as this server's users. The methods
// return errors that match this package's sentinels (errors.Is) and, for a refusal by another server, a *PeerError
// (errors.As); the implementation's own errors stay in the chain, with their messages.
type Rooms interface {
	// Server is this server's name in the protocol: the server part of its users.
	Server() ServerName
	// NewRoom creates a room hosted here, created by creator (one of ours) with initial state after the
	// protocol's base events (which initial may replace: power levels, join rules, history visibility).
	NewRoom(ctx context.Context, creator UserID, initial []InitialState) (RoomID, error)
	// SendRoomEvent sends an event as one of our users. In a room hosted here the returned ID is the event's; in a
	// room another server orders, it is the ID the send is known by until the host's echo (Event.LPDUID), and a
	// refusal by the host reaches Listener.OnLPDUFailed.
	SendRoomEvent(ctx context.Context, req *SendRequest) (EventID, error)
	// JoinRoom joins req.Target (or req.Sender) through req.Via, with the profile in the join itself.
	JoinRoom(ctx context.Context, req *MembershipRequest) (EventID, error)
	// KnockRoom knocks on a room hosted by req.Via as req.Sender.
	KnockRoom(ctx context.Context, req *MembershipRequest) error
	// LeaveRoom makes req.Sender leave the room (or reject its invite).
	LeaveRoom(ctx context.Context, req *MembershipRequest) (EventID, error)
	// InviteToRoom invites req.Target as req.Sender.
	InviteToRoom(ctx context.Context, req *MembershipRequest) (EventID, error)
	// SetMembership sends req's membership for req.Target as an ordinary member event of the room, decided by the
	// room's rules: kicks (leave for another user), bans, unbans (leave for a banned user), and joins, leaves and
	// knocks in a room hosted here. Idempotent by req.Key like SendRoomEvent.
	SetMembership(ctx context.Context, req *MembershipRequest) (EventID, error)
	// RoomState returns a room's current state entries.
	RoomState(ctx context.Context, roomID RoomID) ([]StateEntry, error)
	// RoomEvent returns a stored event of any room, or nil.
	RoomEvent(ctx context.Context, eventID EventID) (*Event, error)
	// DeliveryStatus reports what is queued for each other server of a room, and their last failures.
	DeliveryStatus(ctx context.Context, roomID RoomID) ([]Delivery, error)
}

// FinalSends is a Rooms whose SendRoomEvent returns an event's final ID in every room, also in rooms another server
// orders (MIMI: the hub has accepted the message when the send returns), so that no echo is waited for.
type FinalSends interface {
	SendIDsAreFinal() bool
}

// SendRequest is an event to send into a room.
type SendRequest struct {
	Room   RoomID
	Sender UserID
	Type   string
	// StateKey makes it a state event.
	StateKey *string
	Content  any
	// TS is the event's origin timestamp; zero means now.
	TS time.Time
	// Key makes the send idempotent: a later send with the same room and key sends nothing and returns the first
	// send's ID, so a caller that crashed before recording the result can send again. Empty means no key.
	Key string
	// With, when set, runs inside the database transaction that stores the send, once the ID is known and before the
	// commit: the caller's own rows commit with the send or not at all (ctx carries the transaction). Its error
	// undoes the send and is the send's error. When Key was used before, it runs on its own with the first ID. It
	// must not call Rooms.
	With func(ctx context.Context, eventID EventID) error
}

// MembershipRequest is a membership change.
type MembershipRequest struct {
	Room RoomID
	// Sender acts; Target's membership changes (Sender when empty).
	Sender, Target UserID
	// Membership is the new membership, for SetMembership: join, leave, invite, ban or knock.
	Membership string
	Reason     string
	// Displayname and AvatarURL are the profile a join carries (each left out when empty).
	Displayname, AvatarURL string
	// Via is the server to join or knock through: the room's host.
	Via ServerName
	// TS and Key are as in SendRequest (SetMembership only).
	TS  time.Time
	Key string
}

// TargetOrSender is the user whose membership changes.
func (r *MembershipRequest) TargetOrSender() UserID {
	if r.Target != "" {
		return r.Target
	}
	return r.Sender
}

// InitialState is a state event NewRoom sends after the room's base events.
type InitialState struct {
	Type     string
	StateKey string
	Content  any
}

// StateEntry is one entry of a room's current state.
type StateEntry struct {
	Type     string
	StateKey string
	EventID  EventID
	// Membership is set for member events.
	Membership string
}

// Delivery is what a room has queued for another server, and how the last attempt went.
type Delivery struct {
	Server ServerName `json:"server"`
	// Queued counts the room's events not yet acknowledged by the server, the transaction in flight included.
	Queued int `json:"queued"`
	// RetryCount, NextAttempt and LastError describe the server's last failures; zero when its last send worked.
	RetryCount  int       `json:"retry_count,omitzero"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitzero"`
}
