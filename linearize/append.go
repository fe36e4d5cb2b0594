package linearize

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// appendItem is one completed, checked event about to be appended to a room's log.
type appendItem struct {
	roomID  string
	p       *pdu.PDU
	raw     json.RawMessage
	eventID string
	lpduID  string
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
	// pre runs first inside the transaction, for rows that belong with the batch (a new room, a pending LPDU).
	pre func(ctx context.Context) error
}

// commitBatch writes appended events (with their state and, as hub, their fan-out rows), extra outbox rows and an
// optional received-transaction answer in one database transaction, then publishes the new room states and wakes the
// outbox. Call it with writeLock held.
func (e *Engine) commitBatch(ctx context.Context, b batch) error {
	items, extra, txn := b.items, b.extra, b.txn
	now := e.now().UnixMilli()
	seq := e.outboxSeq
	working := make(map[string]*roomState)
	woken := make(map[string]struct{})
	err := e.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if b.pre != nil {
			if err := b.pre(ctx); err != nil {
				return err
			}
		}
		for _, it := range items {
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
			stored := &StoredEvent{RoomID: it.roomID, Index: idx, EventID: it.eventID, LPDUID: it.lpduID, PDU: it.raw}
			if err := e.store.insertEvent(ctx, stored, it.p.Type, it.p.StateKey, it.p.Sender, now); err != nil {
				return err
			}
			if err := rs.apply(it.p, it.eventID, idx); err != nil {
				return err
			}
			if it.p.StateKey != nil {
				membership := ""
				if it.p.Type == "m.room.member" {
					membership = membershipOf(it.p)
				}
				if err := e.store.setState(ctx, it.roomID, it.p.Type, *it.p.StateKey, it.eventID, membership); err != nil {
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
			sorted := slices.Compact(dests)
			if i := slices.Index(sorted, e.serverName); i >= 0 {
				sorted = slices.Delete(sorted, i, i+1)
			}
			for _, d := range sorted {
				seq++
				if err := e.store.enqueue(ctx, d, seq, it.roomID, it.eventID, nil); err != nil {
					return err
				}
				woken[d] = struct{}{}
			}
		}
		for _, w := range extra {
			seq++
			if err := e.store.enqueue(ctx, w.destination, seq, w.roomID, w.eventID, w.lpdu); err != nil {
				return err
			}
			woken[w.destination] = struct{}{}
		}
		if txn != nil {
			if err := e.store.putReceivedTxn(ctx, txn.origin, txn.txnID, txn.response, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	e.outboxSeq = seq
	for roomID, rs := range working {
		e.rooms[roomID] = rs
	}
	for d := range woken {
		e.outbox.wake(d)
	}
	if len(items) > 0 {
		e.wakeDispatch()
	}
	return nil
}

type receivedTxn struct {
	origin   string
	txnID    string
	response json.RawMessage
}

// isKickOrBan reports whether p removes another user from the room.
func isKickOrBan(p *pdu.PDU) bool {
	if p.Type != "m.room.member" || p.StateKey == nil || *p.StateKey == p.Sender {
		return false
	}
	m := membershipOf(p)
	return m == "leave" || m == "ban"
}
