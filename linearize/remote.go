package linearize

import (
	"context"
	"encoding/json"

	"github.com/lmbridge/lmbridge/linearize/federation"
)

// Remote is what the engine asks of other LM servers. *federation.Client implements it over HTTP; keeping it an
// interface here keeps LM's wire specifics out of the room logic.
type Remote interface {
	SendTransaction(ctx context.Context, destination, txnID string, txn *federation.Transaction) (*federation.SendResponse, error)
	Invite(ctx context.Context, destination, txnID string, req *federation.InviteRequest) (*federation.InviteResponse, error)
	MakeMembership(ctx context.Context, destination, membership, roomID, userID string, versions []string) (*federation.MakeMembershipResponse, error)
	SendJoin(ctx context.Context, destination, txnID string, event json.RawMessage) (*federation.SendJoinResponse, error)
	SendLeave(ctx context.Context, destination, txnID string, event json.RawMessage) error
	SendKnock(ctx context.Context, destination, txnID string, event json.RawMessage) (*federation.SendKnockResponse, error)
	Backfill(ctx context.Context, destination, roomID string, from []string, limit int) (*federation.BackfillResponse, error)
}

var _ Remote = (*federation.Client)(nil)
