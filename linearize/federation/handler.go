// Package federation is the LM transport: server keys, X-Matrix request signing and verification, server-name
// resolution, the HTTP client that speaks to other LM servers, and the HTTP server that routes their requests to a
// Handler. It knows wire shapes and errors, not rooms: the room logic lives in package linearize.
package federation

import (
	"context"
	"encoding/json"
)

// Handler is what the federation server calls once a request is authenticated and its body decoded. origin is the
// verified X-Matrix origin. A returned *Error is written as that status and errcode; any other error is a 500
// M_UNKNOWN.
type Handler interface {
	// Send processes every PDU/LPDU of a transaction before returning; the answer is keyed by received-object ID.
	Send(ctx context.Context, origin, txnID string, txn *Transaction) (*SendResponse, error)
	// GetEvent returns a PDU of a room we are the hub of (participants answer 400 M_WRONG_SERVER).
	GetEvent(ctx context.Context, origin, eventID string) (json.RawMessage, error)
	// State returns the state before eventID and its auth chain.
	State(ctx context.Context, origin, roomID, eventID string) (*StateResponse, error)
	// StateIDs is State with IDs only.
	StateIDs(ctx context.Context, origin, roomID, eventID string) (*StateIDsResponse, error)
	// Backfill returns up to limit events, oldest first, ending with (and including) the events in from.
	Backfill(ctx context.Context, origin, roomID string, from []string, limit int) (*BackfillResponse, error)
	// Invite handles /invite: as hub, complete and forward to the target; as the target, countersign.
	Invite(ctx context.Context, origin, txnID string, req *InviteRequest) (*InviteResponse, error)
	// MakeMembership answers make_join, make_leave and make_knock (membership is "join", "leave" or "knock").
	MakeMembership(ctx context.Context, origin, membership, roomID, userID string, versions []string) (*MakeMembershipResponse, error)
	// SendMembership answers send_join, send_leave and send_knock with the body the draft gives for each.
	SendMembership(ctx context.Context, origin, membership, txnID string, event json.RawMessage) (any, error)
}
