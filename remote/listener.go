package remote

import (
	"context"
	"encoding/json"
)

// Listener receives what happens in a protocol's rooms; the bridge implements it.
//
// Delivery is at least once: OnEvent is called for every event of a room's order (our own and other servers'),
// per room in that order, and only an OnEvent that returned nil counts as delivered, so a crash or an error
// delivers the event again later. Deduplicate by event ID.
type Listener interface {
	// OnEvent is called for each event. Returning an error stops delivery for that room and retries it.
	OnEvent(ctx context.Context, evt *Event) error
	// OnInvite is called for each invite one of our users received from another server (at least once).
	OnInvite(ctx context.Context, inv *Invite) error
	// OnLPDUFailed is called when the server that orders a room refused an event we sent through it (for LM, the
	// hub's failed_pdus entry for our LPDU), so that the sender can be told. lpduID is what SendRoomEvent returned.
	OnLPDUFailed(ctx context.Context, roomID, lpduID, reason string)
}

// OwnEventsSkipper is a Listener that does not need the events sent through this server's own sends delivered back;
// see linearize's description of the best-effort skip.
type OwnEventsSkipper interface {
	SkipOwnEvents() bool
}

// Event is one event of a room's order as delivered to a Listener.
//
// Its IDs are plain strings, not this package's typed IDs: linearize hands the same struct to its own listeners
// (tests, the demo's peer), which compare them with the strings of linearize's API.
type Event struct {
	RoomID string
	// Index is the event's position in the room's order (1 for the first).
	Index   int64
	EventID string
	// LPDUID is set when the event was sent through the room's host before it was ordered: for our own sends it is
	// the ID SendRoomEvent returned.
	LPDUID   string
	Type     string
	StateKey *string
	Sender   string
	// OriginServerTS is in milliseconds.
	OriginServerTS int64
	Content        json.RawMessage
	// PDU is the event in the protocol's wire form, as the room's host signed it.
	PDU json.RawMessage
}

// Invite is an invite for one of our users into a room that another server hosts.
type Invite struct {
	RoomID    string
	EventID   string
	Target    string
	Sender    string
	HubServer string
	// RoomVersion is the protocol's version of the room's rules.
	RoomVersion string
	// Event is the invite in the protocol's wire form, countersigned by us.
	Event         json.RawMessage
	StrippedState []json.RawMessage
}
