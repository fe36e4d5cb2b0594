package linearize

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/lmbridge/lmbridge/linearize/pdu"
	"github.com/lmbridge/lmbridge/linearize/store"
)

// appendItem is one completed, checked event about to be appended to a room's log.
type appendItem struct {
	roomID  string
	p       *pdu.PDU
	raw     json.RawMessage
	eventID string
	lpduID  string
	// own marks an event sent through SendEvent here: appended as hub, or the echo of our LPDU.
	own bool
}

// outboxWrite is one outbox row to write beside the log rows.
type outboxWrite struct {
	destination string
	roomID      string
	eventID     string
	lpdu        json.RawMessage
}

// batch is what commitBatch writes in one database transaction.
type batch struct {
	items []appendItem
	extra []outboxWrite
	txn   *receivedTxn
	// pre runs first inside the transaction, for rows that belong with the batch (a new room, send keys).
	pre func(ctx context.Context) error
	// fannedOut, when set, receives the destinations the committed batch queued PDUs for, as hub.
	fannedOut map[string]int
}

type receivedTxn struct {
	origin   string
	txnID    string
	response json.RawMessage
}

// commitBatch writes appended events (with their state and, as hub, their fan-out rows), extra outbox rows and an
// optional received-transaction answer in one database transaction, then publishes the new room states and wakes the
// outbox and the listeners. Call it with writeLock held.
//
// It is three steps: planBatch works out, inside the transaction, what the batch changes (the rooms' new states, the
// log, state and outbox rows, the seqs, the listener events); writeBatch writes it; publishBatch, after the commit,
// makes it visible to the rest of the engine.
func (e *Engine) commitBatch(ctx context.Context, b batch) error {
	now := e.now().UnixMilli()
	var plan *batchPlan
	err := e.store.Write(ctx, func(ctx context.Context) error {
		plan = nil
		if b.pre != nil {
			if err := b.pre(ctx); err != nil {
				return err
			}
		}
		var err error
		if plan, err = e.planBatch(ctx, b, now); err != nil {
			return err
		}
		return e.writeBatch(ctx, b, plan, now)
	})
	if err != nil {
		if plan != nil {
			for _, id := range plan.held {
				e.fanout.Drop(id)
			}
		}
		return err
	}
	e.publishBatch(b, plan)
	return nil
}

// batchPlan is what a batch changes, worked out before it is written.
type batchPlan struct {
	// seq is the last outbox seq the batch gives.
	seq     int64
	working map[string]*roomState
	// woken maps each destination given rows to the last seq it was given.
	woken map[string]int64
	// acked are the deferred ends of transactions (see outbox.AckedFor) the commit writes.
	acked map[string]int64
	// fannedOut counts the PDUs queued per destination as hub, for the backlog the hub paces its senders by.
	fannedOut map[string]int
	appended  map[string][]heldEvent
	// held are the events whose PDUs were handed to the fan-out bodies, taken back if the transaction does not
	// commit.
	held   []string
	events []store.EventRow
	outbox []store.OutboxRow
	states []stateWrite
}

// stateWrite is one lm_current_state row a batch sets.
type stateWrite struct {
	roomID, evtType, stateKey, eventID string
	membership                         string
}

// planBatch works out the rows and room states of a batch. It returns the plan so far with an error, so that the
// fan-out bodies it held can be taken back.
func (e *Engine) planBatch(ctx context.Context, b batch, now int64) (*batchPlan, error) {
	plan := &batchPlan{
		seq:       e.outboxSeq,
		working:   make(map[string]*roomState),
		woken:     make(map[string]int64),
		fannedOut: make(map[string]int),
		appended:  make(map[string][]heldEvent),
	}
	for _, it := range b.items {
		rs := plan.working[it.roomID]
		if rs == nil {
			cached, err := e.loadRoom(ctx, it.roomID)
			if err != nil {
				return plan, err
			} else if cached == nil {
				return plan, ErrUnknownRoom
			}
			rs = cached.clone()
			plan.working[it.roomID] = rs
		}
		// Fan-out goes to servers joined before or after the event: a leaving server gets its leave, a joining one
		// its join, and a kicked or banned user's server the event that removed it.
		var dests []string
		if rs.info.Role == RoleHub {
			for server := range rs.joined {
				dests = append(dests, server)
			}
			if isKickOrBan(it.p) {
				dests = append(dests, pdu.ServerName(*it.p.StateKey))
			}
		}
		idx := rs.headIdx + 1
		plan.events = append(plan.events, store.EventRow{RoomID: it.roomID, Index: idx, EventID: it.eventID,
			LPDUID: it.lpduID, Type: it.p.Type, StateKey: it.p.StateKey, Sender: it.p.Sender, PDU: string(it.raw),
			ReceivedAt: now})
		if err := rs.apply(it.p, it.eventID, idx); err != nil {
			return plan, err
		}
		if len(e.listeners) > 0 {
			plan.appended[it.roomID] = append(plan.appended[it.roomID], listenerEvent(&it, idx))
		}
		if it.p.StateKey != nil {
			plan.states = append(plan.states, stateWrite{roomID: it.roomID, evtType: it.p.Type, stateKey: *it.p.StateKey,
				eventID: it.eventID, membership: membershipOf(it.p)})
		}
		if rs.info.Role != RoleHub {
			continue
		}
		for server := range rs.joined {
			dests = append(dests, server)
		}
		slices.Sort(dests)
		dests = slices.Compact(dests)
		refs := 0
		for _, d := range dests {
			if d == e.serverName {
				continue
			}
			plan.seq++
			refs++
			plan.outbox = append(plan.outbox, store.OutboxRow{Destination: d, Seq: plan.seq, RoomID: it.roomID, EventID: it.eventID})
			plan.woken[d] = plan.seq
			plan.fannedOut[d]++
		}
		// Held before the commit: the outbox reads the rows only after it.
		if refs > 0 && e.fanout.Add(it.eventID, it.raw, refs) {
			plan.held = append(plan.held, it.eventID)
		}
	}
	for _, w := range b.extra {
		plan.seq++
		plan.outbox = append(plan.outbox, store.OutboxRow{Destination: w.destination, Seq: plan.seq, RoomID: w.roomID,
			EventID: w.eventID, LPDU: string(w.lpdu)})
		plan.woken[w.destination] = plan.seq
	}
	return plan, nil
}

// writeBatch writes a planned batch inside its transaction.
func (e *Engine) writeBatch(ctx context.Context, b batch, plan *batchPlan, now int64) error {
	for _, st := range plan.states {
		if err := e.store.SetState(ctx, st.roomID, st.evtType, st.stateKey, st.eventID, st.membership); err != nil {
			return err
		}
	}
	if err := e.store.InsertEvents(ctx, plan.events); err != nil {
		return err
	}
	if err := e.store.InsertOutbox(ctx, plan.outbox); err != nil {
		return err
	}
	// A destination with no transaction in flight gets these rows marked as its next one in this commit, so that
	// its worker sends them without a commit of its own first (one commit per event fewer when events come one
	// at a time).
	plan.acked = e.outbox.AckedFor(plan.woken)
	for d, last := range plan.acked {
		if err := e.store.EndAcked(ctx, d, last); err != nil {
			return err
		}
	}
	for d, last := range plan.woken {
		if err := e.store.MarkIdleDest(ctx, d, last); err != nil {
			return err
		}
	}
	if b.txn != nil {
		if err := e.store.PutReceivedTxn(ctx, b.txn.origin, b.txn.txnID, b.txn.response, now); err != nil {
			return err
		}
	}
	return nil
}

// publishBatch makes a committed batch visible: the recent events, the rooms' states and heads, the outbox's
// counts, and wakes the outbox's workers and the dispatcher.
func (e *Engine) publishBatch(b batch, plan *batchPlan) {
	e.outboxSeq = plan.seq
	// Before waking the dispatcher: it must find these events held, or read them from the log.
	for roomID, evs := range plan.appended {
		e.recent.add(roomID, evs)
	}
	for roomID, rs := range plan.working {
		e.rooms[roomID] = rs
		e.heads.Store(roomID, rs.headID())
		e.markDirty(roomID)
	}
	e.outbox.ForgetAcked(plan.acked)
	e.outbox.QueuedTo(plan.woken)
	for d, n := range plan.fannedOut {
		e.outbox.Queued(d, n)
		if b.fannedOut != nil {
			b.fannedOut[d] += n
		}
	}
	for d := range plan.woken {
		e.outbox.Wake(d)
	}
	if len(plan.working) > 0 {
		e.wakeDispatch()
	}
}

// isKickOrBan reports whether p removes another user from the room.
func isKickOrBan(p *pdu.PDU) bool {
	if p.Type != "m.room.member" || p.StateKey == nil || *p.StateKey == p.Sender {
		return false
	}
	m := membershipOf(p)
	return m == "leave" || m == "ban"
}
