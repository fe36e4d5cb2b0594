package linearize

import (
	"context"
	"database/sql"
	"encoding/json"
	"slices"

	"go.mau.fi/util/dbutil"

	"github.com/lmbridge/lmbridge/linearize/pdu"
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

// eventRow is one lm_event row of a batch, and outboxRow one lm_outbox row: a batch inserts each table's rows in one
// statement (dbutil's mass insert), so it costs a statement per table rather than per row.
type eventRow struct {
	roomID, eventID, evtType, sender, pdu string
	idx, receivedAt                       int64
	lpduID, stateKey                      sql.NullString
}

func (r eventRow) GetMassInsertValues() [9]any {
	return [9]any{r.roomID, r.idx, r.eventID, r.lpduID, r.evtType, r.stateKey, r.sender, r.pdu, r.receivedAt}
}

type outboxRow struct {
	destination, roomID, eventID string
	seq                          int64
	// lpdu is nil for a log event to fan out.
	lpdu any
}

func (r outboxRow) GetMassInsertValues() [5]any {
	return [5]any{r.destination, r.seq, r.roomID, r.eventID, r.lpdu}
}

const (
	insertEventQuery  = `INSERT INTO lm_event (room_id, idx, event_id, lpdu_id, event_type, state_key, sender, pdu, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`
	insertOutboxQuery = `INSERT INTO lm_outbox (destination, seq, room_id, event_id, lpdu) VALUES ($1, $2, $3, $4, $5)`
)

var (
	insertEventsBuilder = dbutil.NewMassInsertBuilder[eventRow, [0]any, [9]any](insertEventQuery,
		"($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)")
	insertOutboxBuilder = dbutil.NewMassInsertBuilder[outboxRow, [0]any, [5]any](insertOutboxQuery, "($%d, $%d, $%d, $%d, $%d)")
)

// massInsert runs one INSERT of rows through builder; no rows is no statement.
func massInsert[Item dbutil.MassInsertable[Dyn], Dyn dbutil.Array](ctx context.Context, s *store,
	builder *dbutil.MassInsertBuilder[Item, [0]any, Dyn], rows []Item) error {
	if len(rows) == 0 {
		return nil
	}
	query, args := builder.Build([0]any{}, rows)
	_, err := s.exec(ctx, query, args...)
	return err
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
	err := e.store.write(ctx, func(ctx context.Context) error {
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
				e.fanout.drop(id)
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
	// acked are the deferred ends of transactions (see outbox.deferEnd) the commit writes.
	acked map[string]int64
	// fannedOut counts the PDUs queued per destination as hub, for the backlog the hub paces its senders by.
	fannedOut map[string]int
	appended  map[string][]heldEvent
	// held are the events whose PDUs were handed to the fan-out bodies, taken back if the transaction does not
	// commit.
	held   []string
	events []eventRow
	outbox []outboxRow
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
		plan.events = append(plan.events, eventRow{roomID: it.roomID, idx: idx, eventID: it.eventID,
			lpduID: nullString(it.lpduID), evtType: it.p.Type, stateKey: nullStringPtr(it.p.StateKey), sender: it.p.Sender,
			pdu: string(it.raw), receivedAt: now})
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
			plan.outbox = append(plan.outbox, outboxRow{destination: d, seq: plan.seq, roomID: it.roomID, eventID: it.eventID})
			plan.woken[d] = plan.seq
			plan.fannedOut[d]++
		}
		// Held before the commit: the outbox reads the rows only after it.
		if refs > 0 && e.fanout.add(it.eventID, it.raw, refs) {
			plan.held = append(plan.held, it.eventID)
		}
	}
	for _, w := range b.extra {
		plan.seq++
		plan.outbox = append(plan.outbox, outboxRow{destination: w.destination, seq: plan.seq, roomID: w.roomID,
			eventID: w.eventID, lpdu: string(w.lpdu)})
		plan.woken[w.destination] = plan.seq
	}
	return plan, nil
}

// writeBatch writes a planned batch inside its transaction.
func (e *Engine) writeBatch(ctx context.Context, b batch, plan *batchPlan, now int64) error {
	for _, st := range plan.states {
		if err := e.store.setState(ctx, st.roomID, st.evtType, st.stateKey, st.eventID, st.membership); err != nil {
			return err
		}
	}
	if err := massInsert(ctx, e.store, insertEventsBuilder, plan.events); err != nil {
		return err
	}
	if err := massInsert(ctx, e.store, insertOutboxBuilder, plan.outbox); err != nil {
		return err
	}
	// A destination with no transaction in flight gets these rows marked as its next one in this commit, so that
	// its worker sends them without a commit of its own first (one commit per event fewer when events come one
	// at a time).
	plan.acked = e.outbox.ackedFor(plan.woken)
	for d, last := range plan.acked {
		if err := e.store.endAcked(ctx, d, last); err != nil {
			return err
		}
	}
	for d, last := range plan.woken {
		if err := e.store.markIdleDest(ctx, d, last); err != nil {
			return err
		}
	}
	if b.txn != nil {
		if err := e.store.putReceivedTxn(ctx, b.txn.origin, b.txn.txnID, b.txn.response, now); err != nil {
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
	e.outbox.forgetAcked(plan.acked)
	e.outbox.queuedTo(plan.woken)
	for d, n := range plan.fannedOut {
		e.outbox.queued(d, n)
		if b.fannedOut != nil {
			b.fannedOut[d] += n
		}
	}
	for d := range plan.woken {
		e.outbox.wake(d)
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
