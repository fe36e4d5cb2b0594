package linearize

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"

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

// multiInsert builds one INSERT of many rows, so a batch costs a statement per table rather than per row.
type multiInsert struct {
	prefix string
	cols   int
	args   []any
}

func (m *multiInsert) add(values ...any) {
	m.args = append(m.args, values...)
}

func (m *multiInsert) exec(ctx context.Context, s *store) error {
	if len(m.args) == 0 {
		return nil
	}
	var sb strings.Builder
	sb.WriteString(m.prefix)
	for row := 0; row < len(m.args)/m.cols; row++ {
		if row > 0 {
			sb.WriteByte(',')
		}
		sb.WriteByte('(')
		for c := 0; c < m.cols; c++ {
			if c > 0 {
				sb.WriteByte(',')
			}
			sb.WriteByte('$')
			sb.WriteString(strconv.Itoa(row*m.cols + c + 1))
		}
		sb.WriteByte(')')
	}
	_, err := s.exec(ctx, sb.String(), m.args...)
	return err
}

const (
	insertEventsPrefix = `INSERT INTO lm_event (room_id, idx, event_id, lpdu_id, event_type, state_key, sender, pdu, received_at) VALUES `
	insertOutboxPrefix = `INSERT INTO lm_outbox (destination, seq, room_id, event_id, lpdu) VALUES `
)

// commitBatch writes appended events (with their state and, as hub, their fan-out rows), extra outbox rows and an
// optional received-transaction answer in one database transaction, then publishes the new room states and wakes the
// outbox and the listeners. Call it with writeLock held.
func (e *Engine) commitBatch(ctx context.Context, b batch) error {
	now := e.now().UnixMilli()
	seq := e.outboxSeq
	working := make(map[string]*roomState)
	// woken maps each destination given rows to the last seq it was given.
	woken := make(map[string]int64)
	// acked are the deferred ends of transactions (see outbox.deferEnd) this commit writes.
	var acked map[string]int64
	// fannedOut counts the PDUs queued per destination as hub, for the backlog the hub paces its senders by.
	fannedOut := make(map[string]int)
	var appended map[string][]*Event
	// Events whose PDUs were handed to the fan-out bodies, taken back if the transaction does not commit.
	var held []string
	err := e.store.write(ctx, func(ctx context.Context) error {
		held = held[:0]
		appended = make(map[string][]*Event)
		if b.pre != nil {
			if err := b.pre(ctx); err != nil {
				return err
			}
		}
		events := multiInsert{prefix: insertEventsPrefix, cols: 9}
		outbox := multiInsert{prefix: insertOutboxPrefix, cols: 5}
		for _, it := range b.items {
			rs := working[it.roomID]
			if rs == nil {
				cached, err := e.loadRoom(ctx, it.roomID)
				if err != nil {
					return err
				} else if cached == nil {
					return ErrUnknownRoom
				}
				rs = cached.clone()
				working[it.roomID] = rs
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
			events.add(it.roomID, idx, it.eventID, nullString(it.lpduID), it.p.Type, nullStringPtr(it.p.StateKey),
				it.p.Sender, string(it.raw), now)
			if err := rs.apply(it.p, it.eventID, idx); err != nil {
				return err
			}
			if len(e.listeners) > 0 {
				appended[it.roomID] = append(appended[it.roomID], listenerEvent(&it, idx))
			}
			if it.p.StateKey != nil {
				if err := e.store.setState(ctx, it.roomID, it.p.Type, *it.p.StateKey, it.eventID, membershipOf(it.p)); err != nil {
					return err
				}
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
				seq++
				refs++
				outbox.add(d, seq, it.roomID, it.eventID, nil)
				woken[d] = seq
				fannedOut[d]++
			}
			// Held before the commit: the outbox reads the rows only after it.
			if refs > 0 && e.fanout.add(it.eventID, it.raw, refs) {
				held = append(held, it.eventID)
			}
		}
		for _, w := range b.extra {
			seq++
			outbox.add(w.destination, seq, w.roomID, w.eventID, string(w.lpdu))
			woken[w.destination] = seq
		}
		if err := events.exec(ctx, e.store); err != nil {
			return err
		}
		if err := outbox.exec(ctx, e.store); err != nil {
			return err
		}
		// A destination with no transaction in flight gets these rows marked as its next one in this commit, so that
		// its worker sends them without a commit of its own first (one commit per event fewer when events come one
		// at a time).
		acked = e.outbox.ackedFor(woken)
		for d, last := range acked {
			if err := e.store.endAcked(ctx, d, last); err != nil {
				return err
			}
		}
		for d, last := range woken {
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
	})
	if err != nil {
		for _, id := range held {
			e.fanout.drop(id)
		}
		return err
	}
	e.outboxSeq = seq
	// Before waking the dispatcher: it must find these events held, or read them from the log.
	for roomID, evs := range appended {
		e.recent.add(roomID, evs)
	}
	for roomID, rs := range working {
		e.rooms[roomID] = rs
		e.heads.Store(roomID, rs.headID())
		e.markDirty(roomID)
	}
	e.outbox.forgetAcked(acked)
	e.outbox.queuedTo(woken)
	for d, n := range fannedOut {
		e.outbox.queued(d, n)
		if b.fannedOut != nil {
			b.fannedOut[d] += n
		}
	}
	for d := range woken {
		e.outbox.wake(d)
	}
	if len(working) > 0 {
		e.wakeDispatch()
	}
	return nil
}

// isKickOrBan reports whether p removes another user from the room.
func isKickOrBan(p *pdu.PDU) bool {
	if p.Type != "m.room.member" || p.StateKey == nil || *p.StateKey == p.Sender {
		return false
	}
	m := membershipOf(p)
	return m == "leave" || m == "ban"
}
