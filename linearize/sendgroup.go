package linearize

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// sendRequest is one SendEventKeyed call waiting for writeLock. Concurrent calls that queue LPDUs are committed
// together, one database transaction for the group, since the commit is most of what queueing an LPDU costs.
type sendRequest struct {
	ctx context.Context
	p   *pdu.PDU
	key string

	// Set under writeLock by whoever handles the request.
	id   string
	err  error
	hub  string
	lpdu json.RawMessage
	// sameAs is an earlier request of the same group with the same room and key: this one returns its result.
	sameAs *sendRequest
}

type sendKeyRef struct{ roomID, key string }

// errGroupLPDU tells sendQueued that a request produced an LPDU to commit with its group; it never reaches a caller.
var errGroupLPDU = errors.New("LPDU waits for its group's commit")

// sendQueued handles queued send requests in their order: events in our rooms one by one (each builds on the last),
// LPDUs in one commit. Call it with writeLock held.
func (e *Engine) sendQueued(reqs []*sendRequest) {
	inGroup := make(map[sendKeyRef]*sendRequest)
	var lpdus []*sendRequest
	for _, req := range reqs {
		err := e.sendOne(req, inGroup)
		if errors.Is(err, errGroupLPDU) {
			lpdus = append(lpdus, req)
			continue
		}
		req.err = err
		if err != nil {
			req.id = ""
		}
	}
	if len(lpdus) > 0 {
		err := e.commitLPDUs(lpdus)
		for _, req := range lpdus {
			if err != nil {
				req.id, req.err = "", fmt.Errorf("failed to queue LPDU: %w", err)
				continue
			}
			e.sentLPDUs.Store(req.id, req.p.Signatures[e.serverName][string(e.key.ID)])
		}
	}
	for _, req := range reqs {
		if req.sameAs != nil {
			req.id, req.err = req.sameAs.id, req.sameAs.err
		}
	}
}

// commitLPDUs queues LPDUs for their hubs, with their send keys and pending rows, in one database transaction.
func (e *Engine) commitLPDUs(lpdus []*sendRequest) error {
	extra := make([]outboxWrite, len(lpdus))
	for i, req := range lpdus {
		extra[i] = outboxWrite{destination: req.hub, roomID: req.p.RoomID, eventID: req.id, lpdu: req.lpdu}
	}
	return e.commitBatch(lpdus[0].ctx, batch{
		extra: extra,
		pre: func(ctx context.Context) error {
			now := e.now().UnixMilli()
			for _, req := range lpdus {
				if req.key != "" {
					if err := e.store.putSendKey(ctx, req.p.RoomID, req.key, req.id, now); err != nil {
						return err
					}
				}
				if err := e.store.addPendingLPDU(ctx, req.id, req.p.RoomID, now); err != nil {
					return err
				}
			}
			return nil
		},
	})
}
