package linearize

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/outbox"
	"github.com/lmbridge/lmbridge/linearize/pdu"
	"github.com/lmbridge/lmbridge/linearize/store"
)

// inflightTxn is the /send transaction an origin has in flight; a retry of the same txnId waits for it.
type inflightTxn struct {
	txnID string
	done  chan struct{}
}

// inbound is the engine as other LM servers reach it: the federation.Handler behind the federation listener (/send,
// make_ and send_ membership, /invite, and the event, state and backfill queries). It is the Engine under another
// method set, so that the Engine's own methods are the local API and the handler's are not mixed in with them.
type inbound struct{ *Engine }

var _ federation.Handler = inbound{}

// Federation is the inbound federation handler without HTTP, for tests and embedders that carry requests themselves.
func (e *Engine) Federation() federation.Handler {
	return inbound{e}
}

// Send implements federation.Handler: /send. As hub it completes, checks and appends the LPDUs of our rooms; as
// participant it verifies and mirrors the PDUs of the hubs it follows. It answers only after every object has been
// processed and the result committed, together with the transaction ID so a repeat is answered, not reapplied.
func (e inbound) Send(ctx context.Context, origin, txnID string, txn *federation.Transaction) (*federation.SendResponse, error) {
	// A server that sends to us is up: retry what we owe it now rather than at the end of its backoff.
	e.outbox.ResetBackoff(ctx, origin)
	if len(txn.PDUs) > outbox.MaxPDUsPerTxn {
		return nil, federation.Errorf(http.StatusBadRequest, federation.ErrCodeBadJSON,
			"a transaction holds at most %d PDUs, this one has %d", outbox.MaxPDUsPerTxn, len(txn.PDUs))
	}
	for {
		e.txnLock.Lock()
		cur, busy := e.inflight[origin]
		if !busy {
			e.inflight[origin] = &inflightTxn{txnID: txnID, done: make(chan struct{})}
			e.txnLock.Unlock()
			break
		}
		e.txnLock.Unlock()
		if cur.txnID != txnID {
			return nil, federation.Errorf(http.StatusBadRequest, federation.ErrCodeBadState,
				"transaction %s from %s is still being processed", cur.txnID, origin)
		}
		select {
		case <-cur.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	defer func() {
		e.txnLock.Lock()
		cur := e.inflight[origin]
		delete(e.inflight, origin)
		e.txnLock.Unlock()
		close(cur.done)
	}()

	if prev, err := e.store.ReceivedTxn(ctx, origin, txnID); err != nil {
		return nil, err
	} else if prev != nil {
		var resp federation.SendResponse
		if err = json.Unmarshal(prev, &resp); err != nil {
			return nil, fmt.Errorf("failed to decode stored answer to %s: %w", txnID, err)
		}
		return &resp, nil
	}
	resp, paceBy, kept, err := e.processTransaction(ctx, origin, txnID, txn)
	if err != nil {
		zerolog.Ctx(ctx).Err(err).Str("origin", origin).Str("txn_id", txnID).Msg("Failed to process transaction")
		return nil, err
	}
	// PDUs kept behind others of a room whose join has completed meanwhile: appended now (a room still joining has
	// its kept PDUs appended by the join).
	for _, roomID := range kept {
		if err = e.applyPending(ctx, roomID); err != nil {
			zerolog.Ctx(ctx).Err(err).Str("room_id", roomID).Msg("Failed to append the PDUs kept during a join")
		}
	}
	if len(paceBy) > 0 {
		// Appended and queued already: the wait only delays the sender's next transaction.
		e.outbox.WaitForBacklog(ctx, paceBy)
	}
	return resp, nil
}

// received is one object of a /send transaction after the checks that need no lock.
type received struct {
	raw json.RawMessage
	p   *pdu.PDU
	id  string
	// lpduID is the ID of the LPDU a received PDU was completed from, when computed already.
	lpduID string
	room   *RoomInfo
	// drop marks an object ignored without a failed_pdus entry (an LPDU sent to a participant, a room we do not follow).
	drop bool
	// ownEcho marks the echo of an LPDU we sent, with our signature unchanged.
	ownEcho bool
	// pending marks a verified PDU of a room whose join is in flight, or that has kept PDUs: kept for applyPending.
	pending bool
	err     error
}

// processTransaction applies a transaction and returns the answer; when it appended LPDUs as hub, the destinations
// their PDUs were queued for (the sender is paced by their backlog); and the rooms it kept PDUs of (see received.pending).
func (e *Engine) processTransaction(ctx context.Context, origin, txnID string, txn *federation.Transaction) (*federation.SendResponse, map[string]int, []string, error) {
	arrived, ok := federation.ReceivedAt(ctx)
	if !ok {
		arrived = time.Now()
	}
	log := zerolog.Ctx(ctx).With().Str("origin", origin).Str("txn_id", txnID).Logger()
	resp := &federation.SendResponse{FailedPDUs: make(map[string]federation.FailedPDU)}
	objs := e.precheckAll(ctx, origin, txn.PDUs)
	for _, r := range objs {
		var retry *retryLaterError
		if errors.As(r.err, &retry) {
			if retry.cause != nil {
				log.Warn().Err(retry.cause).Str("room_id", retry.roomID).Msg("Asking the sender to retry a transaction")
			}
			return nil, nil, nil, retry.federationError()
		}
	}
	objs, err := e.fillGaps(ctx, origin, objs)
	if err != nil {
		return nil, nil, nil, err
	}

	e.writeLock.Lock()
	defer e.writeLock.Unlock()
	// An LPDU completed already, sent again under another txnId, is accepted without a second append. Looked up under
	// writeLock, so that no append of it falls between the look-up and ours.
	completed, err := e.completedLPDUs(ctx, objs)
	if err != nil {
		return nil, nil, nil, err
	}
	working := make(map[string]*roomState)
	var items []appendItem
	var echoed []string
	tookLPDUs := false
	seen := make(map[string]bool)
	var kept []*received
	keptRooms := make(map[string]bool)
	for _, r := range objs {
		if r.drop {
			continue
		}
		if r.err == nil && r.pending {
			kept = append(kept, r)
			keptRooms[r.room.RoomID] = true
			continue
		}
		if r.err == nil {
			rs := working[r.room.RoomID]
			if rs == nil {
				cached, err := e.loadRoom(ctx, r.room.RoomID)
				if err != nil {
					return nil, nil, nil, err
				}
				rs = cached.clone()
				working[r.room.RoomID] = rs
			}
			var it *appendItem
			if r.room.Role == RoleHub {
				if completed[r.id] {
					continue
				}
				it, r.err = e.completeLPDU(r.p, rs)
				if r.err == nil {
					it.lpduID = r.id
					tookLPDUs = true
					completed[r.id] = true
				}
			} else {
				it, r.err = e.acceptFromHub(ctx, r, rs, seen)
				if it != nil && it.lpduID != "" {
					echoed = append(echoed, it.lpduID)
				}
			}
			if r.err == nil && it != nil {
				if err := rs.apply(it.p, it.eventID, rs.headIdx+1); err != nil {
					return nil, nil, nil, err
				}
				seen[it.eventID] = true
				items = append(items, *it)
			}
		}
		if r.err != nil {
			log.Debug().Err(r.err).Str("id", r.id).Msg("Refused object of transaction")
			if r.id != "" {
				resp.FailedPDUs[r.id] = federation.FailedPDU{Error: r.err.Error()}
			}
		}
	}
	answer, err := json.Marshal(resp)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("failed to encode answer: %w", err)
	}
	b := batch{items: items, txn: &receivedTxn{origin: origin, txnID: txnID, response: answer}}
	if len(kept) > 0 {
		b.pre = func(ctx context.Context) error { return e.insertPending(ctx, kept) }
		// Under writeLock, as applyPending's check before it drops the mark: later PDUs queue behind these.
		for roomID := range keptRooms {
			e.pendingRooms.Store(roomID, struct{}{})
		}
	}
	if tookLPDUs {
		b.fannedOut = make(map[string]int)
	}
	if err = e.commitBatch(ctx, b); err != nil {
		// The cache may hold state the failed transaction never committed; reload it next time.
		for roomID := range working {
			delete(e.rooms, roomID)
		}
		return nil, nil, nil, fmt.Errorf("failed to append transaction %s: %w", txnID, err)
	}
	if e.appended != nil {
		for _, it := range items {
			e.appended(it.eventID, arrived)
		}
	}
	for _, id := range echoed {
		e.sentLPDUs.Delete(id)
	}
	var keptIDs []string
	for roomID := range keptRooms {
		keptIDs = append(keptIDs, roomID)
	}
	return resp, b.fannedOut, keptIDs, nil
}

// completedLPDUs returns the IDs of the LPDUs of objs, sent to us as hub, that the log holds the completion of.
func (e *Engine) completedLPDUs(ctx context.Context, objs []*received) (map[string]bool, error) {
	var ids []string
	for _, r := range objs {
		if r.err == nil && !r.drop && r.room.Role == RoleHub {
			ids = append(ids, r.id)
		}
	}
	completed := make(map[string]bool)
	if len(ids) == 0 {
		return completed, nil
	}
	found, err := e.store.LoggedLPDUs(ctx, ids)
	if err != nil {
		return nil, err
	}
	for _, id := range found {
		completed[id] = true
	}
	return completed, nil
}

// precheckAll runs precheck on every object, spread over the CPUs: signature checks dominate a transaction's cost
// and need no lock.
func (e *Engine) precheckAll(ctx context.Context, origin string, pdus []json.RawMessage) []*received {
	objs := make([]*received, len(pdus))
	workers := min(runtime.GOMAXPROCS(0), len(pdus))
	if workers <= 1 {
		for i, raw := range pdus {
			objs[i] = e.precheck(ctx, origin, raw)
		}
		return objs
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(pdus) {
					return
				}
				objs[i] = e.precheck(ctx, origin, pdus[i])
			}
		}()
	}
	wg.Wait()
	return objs
}

// retryLaterError fails a whole transaction with 503 so that its sender retries it: when we could not read the room. The sender is told the room and the reason, never our internals
// (cause goes to our log).
type retryLaterError struct {
	roomID string
	reason string
	cause  error
}

func (e *retryLaterError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%s in %s, retry the transaction: %v", e.reason, e.roomID, e.cause)
	}
	return fmt.Sprintf("%s in %s, retry the transaction", e.reason, e.roomID)
}

func (e *retryLaterError) Unwrap() error {
	return e.cause
}

func (e *retryLaterError) federationError() *federation.Error {
	return federation.Errorf(http.StatusServiceUnavailable, federation.ErrCodeUnknown, "%s in %s, retry the transaction",
		e.reason, e.roomID)
}

// precheck parses one received object and runs the checks that need neither the room's state nor the write lock:
// room role, hub_server, signatures and hashes.
func (e *Engine) precheck(ctx context.Context, origin string, raw json.RawMessage) *received {
	r := &received{raw: raw}
	p, err := parseEvent(raw)
	if err != nil {
		// An object we cannot parse has no ID to key an error by; the draft says drop it.
		r.err = err
		r.id = bestEffortID(raw)
		return r
	}
	r.p = p
	r.id, err = eventID(p)
	if err != nil {
		r.err = err
		return r
	}
	room, err := e.store.GetRoom(ctx, p.RoomID)
	if err != nil {
		r.err = &retryLaterError{roomID: p.RoomID, reason: "Failed to read the room", cause: err}
		return r
	} else if room == nil {
		r.err = fmt.Errorf("unknown room %s", p.RoomID)
		return r
	}
	r.room = room
	switch {
	case room.Role == RoleHub:
		if !p.IsLPDU() {
			r.err = fmt.Errorf("the hub of %s accepts LPDUs from participants, not PDUs", p.RoomID)
		} else if p.HubServer != e.serverName {
			r.err = fmt.Errorf("hub_server is %s, but the hub of %s is %s", p.HubServer, p.RoomID, e.serverName)
		} else if p.SenderServer() != origin {
			r.err = fmt.Errorf("%s may not send events for %s", origin, p.Sender)
		} else {
			r.err = verifyLPDU(ctx, p, e.keys)
		}
	case room.HubServer != origin:
		// Participants accept room events only from the room's hub (§3).
		r.err = fmt.Errorf("%s is not the hub of %s", origin, p.RoomID)
	case p.IsLPDU():
		r.drop = true
	default:
		var redacted bool
		r.ownEcho = e.isOwnEcho(r)
		redacted, r.err = verifyPDU(ctx, &r.p, e.keys, r.ownEcho)
		if redacted {
			r.ownEcho = false
			zerolog.Ctx(ctx).Warn().Str("event_id", r.id).Msg("Content hash mismatch, keeping the redacted event")
		}
		// While our join is in flight (eigen sends the join to every server in the room, us included, before it
		// answers send_join), and behind PDUs kept then: kept, answered, and appended after the join.
		r.pending = r.err == nil && (room.Status == store.StatusJoining || e.hasPending(room.RoomID))
	}
	return r
}

// completeLPDU makes a PDU of a checked LPDU against the room's state and auth-checks it.
func (e *Engine) completeLPDU(lpdu *pdu.PDU, rs *roomState) (*appendItem, error) {
	p := lpdu.Clone()
	p.AuthEvents = selectAuthEvents(p, rs)
	p.PrevEvents = []string{rs.headID()}
	if err := checkAuth(p, rs); err != nil {
		return nil, err
	}
	if err := e.signAsHub(p); err != nil {
		return nil, err
	}
	return e.makeItem(rs.info.RoomID, p)
}

func (e *Engine) makeItem(roomID string, p *pdu.PDU) (*appendItem, error) {
	id, err := eventID(p)
	if err != nil {
		return nil, err
	}
	raw, err := p.Canonical()
	if err != nil {
		return nil, fmt.Errorf("failed to encode %s: %w", id, err)
	} else if len(raw) > pdu.MaxEventBytes {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", pdu.ErrEventTooLarge, len(raw), pdu.MaxEventBytes)
	}
	return &appendItem{roomID: roomID, p: p, raw: raw, eventID: id}, nil
}

// acceptFromHub appends a PDU the hub sent us after the checks that need our mirror's state.
func (e *Engine) acceptFromHub(ctx context.Context, r *received, rs *roomState, seen map[string]bool) (*appendItem, error) {
	if seen[r.id] {
		return nil, nil
	}
	// An event that follows our head cannot be one we hold already; anything else may be an echo of an event we
	// have (our join from send_join, a retried transaction).
	if len(r.p.PrevEvents) != 1 || r.p.PrevEvents[0] != rs.headID() {
		known, err := e.store.GetEvent(ctx, r.id)
		if err != nil {
			return nil, err
		} else if known != nil && known.Index > 0 {
			return nil, nil
		}
	}
	if err := checkAuth(r.p, rs); err != nil {
		// The hub decides; a participant only warns (§5.1: participants SHOULD check, MAY warn).
		zerolog.Ctx(ctx).Warn().Err(err).Str("event_id", r.id).Msg("Hub sent an event that fails our auth check")
	}
	it := &appendItem{roomID: rs.info.RoomID, p: r.p, raw: r.raw, eventID: r.id, lpduID: r.lpduID, own: r.ownEcho}
	if r.p.HubServer != "" && it.lpduID == "" {
		it.lpduID, _ = lpduIDOf(r.p)
	}
	raw, err := r.p.Canonical()
	if err != nil {
		return nil, err
	}
	it.raw = raw
	return it, nil
}

// isOwnEcho reports whether a PDU from the hub is the completion of an LPDU we signed and sent, carrying our signature
// unchanged. Its LPDU ID is the hash of the exact view we signed, so our signature over it is known to verify and the
// echo needs only the hub's signature checked. It sets r.lpduID on the way.
func (e *Engine) isOwnEcho(r *received) bool {
	p := r.p
	if p.HubServer == "" || p.SenderServer() != e.serverName {
		return false
	}
	id, err := lpduIDOf(p)
	if err != nil {
		return false
	}
	r.lpduID = id
	sig, ok := e.sentLPDUs.Load(id)
	if !ok {
		return false
	}
	ours := p.Signatures[e.serverName]
	return len(ours) == 1 && ours[string(e.key.ID)] == sig.(string)
}
