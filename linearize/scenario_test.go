package linearize

import (
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// logIDs returns the event IDs of a room's log on an engine, oldest first.
func logIDs(t *testing.T, nd *node, roomID string) []string {
	t.Helper()
	evs := must(nd.eng.Events(testContext(t), roomID, 0, 10000))
	ids := make([]string, len(evs))
	for i, ev := range evs {
		ids[i] = ev.EventID
	}
	return ids
}

// joinedPair creates a room on hub as alice, invites bob on part and joins him; it returns the room ID.
func joinedPair(t *testing.T, hub, part *node) string {
	t.Helper()
	ctx := testContext(t)
	alice, bob := userAt("alice", hub.name), userAt("bob", part.name)
	roomID := must(hub.eng.CreateRoom(ctx, alice, nil))
	must(hub.eng.InviteUser(ctx, roomID, alice, bob))
	part.rec.waitFor(t, "bob's invite", func() bool {
		part.rec.lock.Lock()
		defer part.rec.lock.Unlock()
		return len(part.rec.invites) > 0 && part.rec.invites[len(part.rec.invites)-1].RoomID == roomID
	})
	must(part.eng.Join(ctx, roomID, bob, hub.name))
	return roomID
}

func TestDirectInviteJoinMessages(t *testing.T) {
	var n directNet
	hub, part := n.newNode(t, "hub.test"), n.newNode(t, "part.test")
	ctx := testContext(t)
	roomID := joinedPair(t, hub, part)
	alice, bob := userAt("alice", hub.name), userAt("bob", part.name)
	must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("hello bob"), time.Time{}))
	lpduID := must(part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text("hello alice"), time.Time{}))
	part.rec.waitFor(t, "bob's echo", func() bool {
		evs := part.rec.roomEvents(roomID)
		return len(evs) > 0 && evs[len(evs)-1].LPDUID == lpduID
	})
	hubLog := logIDs(t, hub, roomID)
	partLog := logIDs(t, part, roomID)
	// The participant's mirror starts at bob's join: the hub's log from there on must be identical.
	if len(hubLog) < len(partLog) || len(partLog) != 3 {
		t.Fatalf("hub log %d events, participant log %d events, want participant 3", len(hubLog), len(partLog))
	}
	tail := hubLog[len(hubLog)-len(partLog):]
	for i := range tail {
		if tail[i] != partLog[i] {
			t.Fatalf("logs differ at %d: hub %s, participant %s", i, tail[i], partLog[i])
		}
	}
	evs := part.rec.roomEvents(roomID)
	if bodyOf(evs[1]) != "hello bob" || bodyOf(evs[2]) != "hello alice" {
		t.Fatalf("participant saw %q, %q", bodyOf(evs[1]), bodyOf(evs[2]))
	}
	hub.rec.waitFor(t, "hub listener", func() bool { return len(hub.rec.roomEvents(roomID)) == len(hubLog) })
	_ = pdu.ServerName
}
