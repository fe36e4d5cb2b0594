package linearize

import (
	"testing"
	"time"
)

// skipRecorder is a recorder that asks not to get our own events back.
type skipRecorder struct{ *recorder }

func (skipRecorder) SkipOwnEvents() bool { return true }

// TestListenerSkipsOwnEvents checks that a listener implementing OwnEventsSkipper does not get the events sent through
// its engine's SendEvent (as hub, and the echo of an LPDU as participant) but gets every other event, while the
// listener beside it gets everything.
func TestListenerSkipsOwnEvents(t *testing.T) {
	ctx := testContext(t)
	hub := newHTTPNode(t, nil)
	part := newHTTPNode(t, nil)
	for _, nd := range []*node{hub, part} {
		nd.skipper = &skipRecorder{newRecorder()}
		httpNet{}.stop(t, nd)
		httpNet{}.start(t, nd)
	}
	roomID, alice, bob := joinedPair(t, hub, part)

	fromHub := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("from the hub"), time.Time{}))
	lpduID := must(part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text("from the participant"), time.Time{}))
	var fromPart string
	has := func(r *recorder, id string) bool {
		for _, ev := range r.roomEvents(roomID) {
			if ev.EventID == id {
				return true
			}
		}
		return false
	}
	part.rec.waitFor(t, "both messages at the participant", func() bool {
		for _, ev := range part.rec.roomEvents(roomID) {
			if ev.LPDUID == lpduID {
				fromPart = ev.EventID
			}
		}
		return fromPart != "" && has(part.rec, fromHub)
	})
	hub.rec.waitFor(t, "both messages at the hub", func() bool { return has(hub.rec, fromPart) && has(hub.rec, fromHub) })
	hub.skipper.waitFor(t, "the participant's message at the hub's skipping listener", func() bool { return has(hub.skipper.recorder, fromPart) })
	// A later event from the hub, so that the participant's skipping listener is known to be past the echo.
	marker := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("marker"), time.Time{}))
	part.skipper.waitFor(t, "the hub's messages at the participant's skipping listener", func() bool {
		return has(part.skipper.recorder, fromHub) && has(part.skipper.recorder, marker)
	})
	// The skipping listeners are past both events now (each room delivers in log order).
	if has(hub.skipper.recorder, fromHub) {
		t.Fatal("the hub's skipping listener got the event sent through the hub's SendEvent")
	}
	if has(part.skipper.recorder, fromPart) {
		t.Fatal("the participant's skipping listener got the echo of its own LPDU")
	}
}
