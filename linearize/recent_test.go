package linearize

import (
	"testing"
	"time"
)

func recentRange(from, to int64) []heldEvent {
	var evs []heldEvent
	for i := from; i <= to; i++ {
		evs = append(evs, heldEvent{Event: &Event{Index: i, PDU: []byte("{}")}})
	}
	return evs
}

func TestRecentEventsServeOnlyWhatFollowsTheCursor(t *testing.T) {
	r := newRecentEvents()
	if _, ok := r.after("!r", 0, 10); ok {
		t.Fatal("an empty cache claimed to hold events")
	}
	r.add("!r", recentRange(5, 9))
	for _, tc := range []struct {
		cur        int64
		ok         bool
		first, cnt int64
	}{{3, false, 0, 0}, {4, true, 5, 5}, {6, true, 7, 3}, {9, true, 0, 0}, {10, false, 0, 0}} {
		evs, ok := r.after("!r", tc.cur, 10)
		if ok != tc.ok || int64(len(evs)) != tc.cnt || (len(evs) > 0 && evs[0].Index != tc.first) {
			t.Errorf("after %d: got %d events (ok %v), want %d from %d (ok %v)", tc.cur, len(evs), ok, tc.cnt, tc.first, tc.ok)
		}
	}
	if evs, _ := r.after("!r", 4, 2); len(evs) != 2 {
		t.Errorf("limit 2 gave %d events", len(evs))
	}
	// Copies: a listener changing its event does not change the cache.
	evs, _ := r.after("!r", 4, 1)
	evs[0].Index = 99
	if again, _ := r.after("!r", 4, 1); again[0].Index != 5 {
		t.Fatal("the cache handed out its own events")
	}
	// A gap drops what was held.
	r.add("!r", recentRange(12, 13))
	if _, ok := r.after("!r", 9, 10); ok {
		t.Fatal("events across a gap were served")
	}
	if evs, ok := r.after("!r", 11, 10); !ok || len(evs) != 2 {
		t.Fatalf("after the gap: %d events, ok %v", len(evs), ok)
	}
	// Bounded.
	r.add("!r", recentRange(14, 14+recentMax))
	if n := len(r.rooms["!r"]); n > recentMax {
		t.Fatalf("%d events held, the bound is %d", n, recentMax)
	}
	if _, ok := r.after("!r", 11, 10); ok {
		t.Fatal("trimmed events were served")
	}
}

func TestRecentEventsTrim(t *testing.T) {
	r := newRecentEvents()
	r.add("!r", recentRange(1, 5))
	r.trim("!r", 3)
	if evs, ok := r.after("!r", 3, 10); !ok || len(evs) != 2 || evs[0].Index != 4 {
		t.Fatalf("after trimming to 3: %d events, ok %v", len(evs), ok)
	}
	if _, ok := r.after("!r", 2, 10); ok {
		t.Fatal("trimmed events were served")
	}
	r.trim("!r", 5)
	if _, held := r.rooms["!r"]; held {
		t.Fatal("a room whose events every listener has had is still held")
	}
}

// TestDeliveredEventsLeaveTheCache checks that the engine keeps no recent events once its listener has had them.
func TestDeliveredEventsLeaveTheCache(t *testing.T) {
	ctx := testContext(t)
	nd := newHTTPNode(t, nil)
	alice := userAt("alice", nd.name)
	roomID := must(nd.eng.CreateRoom(ctx, alice, nil))
	for i := 0; i < 5; i++ {
		must(nd.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("hi"), time.Now()))
	}
	waitListener(t, nd, roomID)
	// The dispatcher trims after delivering; give it the moment between its last OnEvent and the trim.
	deadline := time.Now().Add(5 * time.Second)
	for {
		nd.eng.recent.lock.Lock()
		held := len(nd.eng.recent.rooms[roomID])
		nd.eng.recent.lock.Unlock()
		if held == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d delivered events still held", held)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
