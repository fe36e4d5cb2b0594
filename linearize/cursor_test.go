package linearize

import (
	"testing"
	"time"
)

// TestListenerCursorWrittenLazily delivers events one at a time, as a quiet room does: the cursor is written about
// once per cursorSaveInterval rather than once per event, a stop writes it, and a restart delivers nothing again.
func TestListenerCursorWrittenLazily(t *testing.T) {
	ctx := testContext(t)
	nd := newHTTPNode(t, nil)
	alice := userAt("alice", nd.name)
	roomID := must(nd.eng.CreateRoom(ctx, alice, nil))
	nd.rec.waitFor(t, "the room's first events", func() bool { return len(nd.rec.roomEvents(roomID)) > 0 })
	// Let the cursor of the creation events be written and its interval pass.
	time.Sleep(cursorSaveInterval + 100*time.Millisecond)
	before := len(nd.rec.roomEvents(roomID))
	commits := nd.eng.store.Commits()
	const sends = 30
	for i := 0; i < sends; i++ {
		must(nd.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("one at a time"), time.Time{}))
		nd.rec.waitFor(t, "the event's delivery", func() bool { return len(nd.rec.roomEvents(roomID)) == before+i+1 })
	}
	// One commit per append; cursor writes only when the interval has passed since the last.
	if n := nd.eng.store.Commits() - commits; n > sends+10 {
		t.Fatalf("%d commits for %d events delivered one at a time, want at most %d", n, sends, sends+10)
	}
	head := nd.rec.roomEvents(roomID)[before+sends-1].Index
	httpNet{}.stop(t, nd)
	db := openTestDB(t, nd.dbPath)
	var stored int64
	if err := db.QueryRow(ctx, `SELECT idx FROM lm_listener_cursor WHERE listener='test' AND room_id=$1`, roomID).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	if stored != head {
		t.Fatalf("stored cursor %d after stop, want the last delivered index %d", stored, head)
	}
	httpNet{}.start(t, nd)
	after := must(nd.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("after the restart"), time.Time{}))
	nd.rec.waitFor(t, "the event after the restart", func() bool { return len(nd.rec.roomEvents(roomID)) > 0 })
	time.Sleep(50 * time.Millisecond)
	// The restarted engine has a fresh recorder: it must be told of the new event only.
	if evs := nd.rec.roomEvents(roomID); len(evs) != 1 || evs[0].EventID != after {
		t.Fatalf("after a clean restart the listener got %d events (first %s), want only %s", len(evs), evs[0].EventID, after)
	}
}
