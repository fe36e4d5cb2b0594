package linearize

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// sendRequest is one SendEventKeyed call waiting for writeLock. Concurrent calls that queue LPDUs are committed
// together, one database transaction for the group, since the commit is most of what queueing an LPDU costs.
type sendRequest struct {
	ctx context.Context
	p   *pdu.PDU
	key string
	// with runs inside the transaction of the send (SendEventKeyedWith).
	with func(ctx context.Context, eventID string) error

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
	for len(lpdus) > 0 {
		failed, err := e.commitLPDUs(lpdus)
		if failed != nil {
			// One caller's function refused: that call fails alone, and the others commit without it.
			failed.id, failed.err = "", fmt.Errorf("failed to queue LPDU: %w", err)
			lpdus = slices.DeleteFunc(lpdus, func(req *sendRequest) bool { return req == failed })
			continue
		}
		for _, req := range lpdus {
			if err != nil {
				req.id, req.err = "", fmt.Errorf("failed to queue LPDU: %w", err)
				continue
			}
			e.sentLPDUs.Store(req.id, req.p.Signatures[e.serverName][string(e.key.ID)])
		}
		break
	}
	for _, req := range reqs {
		if req.sameAs == nil {
			continue
		}
		req.id, req.err = req.sameAs.id, req.sameAs.err
		if req.err == nil && req.with != nil {
			// As for a key used in an earlier transaction: nothing more is sent, the caller's rows still commit.
			if err := e.store.Write(req.ctx, func(ctx context.Context) error { return req.with(ctx, req.id) }); err != nil {
				req.id, req.err = "", err
			}
		}
	}
}

// errCallerRefused wraps the error of a SendEventKeyedWith function, to tell it from the group's own failures.
type errCallerRefused struct {
	req *sendRequest
	err error
}

func (e *errCallerRefused) Error() string { return e.err.Error() }
func (e *errCallerRefused) Unwrap() error { return e.err }

// commitLPDUs queues LPDUs for their hubs, with their send keys, pending rows and callers' functions, in one
// database transaction. When a caller's function fails, nothing commits and that request is returned with its error.
func (e *Engine) commitLPDUs(lpdus []*sendRequest) (*sendRequest, error) {
	extra := make([]outboxWrite, len(lpdus))
	for i, req := range lpdus {
		extra[i] = outboxWrite{destination: req.hub, roomID: req.p.RoomID, eventID: req.id, lpdu: req.lpdu}
	}
	err := e.commitBatch(lpdus[0].ctx, batch{
		extra: extra,
		pre: func(ctx context.Context) error {
			now := e.now().UnixMilli()
			for _, req := range lpdus {
				if req.key != "" {
					if err := e.store.PutSendKey(ctx, req.p.RoomID, req.key, req.id, now); err != nil {
						return err
					}
				}
				if req.with != nil {
					if err := req.with(ctx, req.id); err != nil {
						return &errCallerRefused{req: req, err: err}
					}
				}
			}
			return nil
		},
	})
	if refused, ok := errors.AsType[*errCallerRefused](err); ok {
		return refused.req, refused.err
	}
	return nil, err
}
