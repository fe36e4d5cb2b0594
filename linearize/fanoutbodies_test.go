package linearize

import (
	"fmt"
	"testing"
	"time"
)

// TestFanoutBodiesHeldAndRead fans events out to a participant that is down, with some of their bodies held in
// memory and some forgotten (as when the holder starts over): every event arrives intact, and once sent, no body is
// held any more.
func TestFanoutBodiesHeldAndRead(t *testing.T) {
	eachNet(t, func(t *testing.T, n network) {
		hub, part := n.newNode(t, "hub.test"), n.newNode(t, "part.test")
		ctx := testContext(t)
		roomID, alice, _ := joinedPair(t, hub, part)
		seen := part.rec.roomEvents(roomID)
		n.stop(t, part)
		var last string
		for i := 0; i < 60; i++ {
			last = must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text(fmt.Sprintf("m%d", i)), time.Time{}))
			if i%3 == 0 {
				hub.eng.fanout.Drop(last)
			}
		}
		if _, held := hub.eng.fanout.Get(last); !held {
			t.Fatal("the last event's body is not held for its fan-out")
		}
		n.start(t, part)
		waitHead(t, part, roomID, last)
		waitListener(t, part, roomID)
		checkMirror(t, hub, part, roomID, append(seen, part.rec.roomEvents(roomID)...))
		// The hub lets go of a body after the transaction's answer, a moment after the participant appended it.
		held := func() int {
			return hub.eng.fanout.Len()
		}
		for deadline := time.Now().Add(5 * time.Second); held() != 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if left := held(); left != 0 {
			t.Fatalf("%d bodies still held after every destination had them", left)
		}
	})
}
