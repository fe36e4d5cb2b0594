package linearize

import "sync"

// recentMax bounds the events kept per room. Delivery usually follows an append within moments, so the last few
// pages are enough; a listener further behind reads the log. Once every listener has had a room's events, the
// dispatcher drops them (trim), so that memory follows the delivery backlog, not the number of rooms.
const recentMax = 256

// recentEvents keeps the listener form of each room's latest appended events, built from the parsed PDUs at commit,
// so that delivering them needs neither a database read nor a parse. Only committed events enter it, in log order.
type recentEvents struct {
	lock  sync.Mutex
	rooms map[string][]heldEvent
}

func newRecentEvents() *recentEvents {
	return &recentEvents{rooms: make(map[string][]heldEvent)}
}

// listenerEvent is the listener form of an event being appended at idx.
func listenerEvent(it *appendItem, idx int64) heldEvent {
	p := it.p
	return heldEvent{Event: &Event{
		RoomID: it.roomID, Index: idx, EventID: it.eventID, LPDUID: it.lpduID, Type: p.Type, StateKey: p.StateKey,
		Sender: p.Sender, OriginServerTS: p.OriginServerTS, Content: p.Content, PDU: it.raw,
	}, own: it.own}
}

// add records committed events of a room, which follow the ones already held (else the held ones are dropped).
func (r *recentEvents) add(roomID string, evs []heldEvent) {
	if len(evs) == 0 {
		return
	}
	r.lock.Lock()
	defer r.lock.Unlock()
	held := r.rooms[roomID]
	if len(held) > 0 && held[len(held)-1].Index+1 != evs[0].Index {
		held = nil
	}
	held = append(held, evs...)
	if len(held) > recentMax {
		held = append([]heldEvent(nil), held[len(held)-recentMax/2:]...)
	}
	r.rooms[roomID] = held
}

// after returns up to limit events of roomID with an index above idx, as copies, or ok false when the events right
// after idx are not held (the caller reads the log).
func (r *recentEvents) after(roomID string, idx int64, limit int) (out []heldEvent, ok bool) {
	r.lock.Lock()
	defer r.lock.Unlock()
	held := r.rooms[roomID]
	if len(held) == 0 {
		return nil, false
	}
	first := held[0].Index
	if idx+1 < first || idx > held[len(held)-1].Index {
		return nil, false
	}
	held = held[idx+1-first:]
	out = make([]heldEvent, 0, min(len(held), limit))
	for _, ev := range held[:min(len(held), limit)] {
		c := *ev.Event
		out = append(out, heldEvent{Event: &c, own: ev.own})
	}
	return out, true
}

// trim drops a room's events up to index upTo (every listener has had them).
func (r *recentEvents) trim(roomID string, upTo int64) {
	r.lock.Lock()
	defer r.lock.Unlock()
	held := r.rooms[roomID]
	n := 0
	for n < len(held) && held[n].Index <= upTo {
		n++
	}
	if n == len(held) {
		delete(r.rooms, roomID)
	} else if n > 0 {
		r.rooms[roomID] = append([]heldEvent(nil), held[n:]...)
	}
}
