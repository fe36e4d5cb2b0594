package linearize

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/linearize/federation"
)

// TestDepartedServerReadsOnlyUpToItsDeparture: a participant server whose only user was kicked may still fetch the
// events of its time in the room, but not what the room said after; a server that was never in the room reads
// nothing; a server with a joined user reads everything.
func TestDepartedServerReadsOnlyUpToItsDeparture(t *testing.T) {
	ctx := testContext(t)
	hub := newHTTPNode(t, nil)
	part := newHTTPNode(t, nil)
	roomID, alice, bob := joinedPair(t, hub, part)
	before := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("while bob is here"), time.Time{}))
	kick := must(hub.eng.Kick(ctx, roomID, alice, bob, "out"))
	after := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("after bob left"), time.Time{}))

	for _, id := range []string{before, kick} {
		if _, err := hub.eng.GetEvent(ctx, part.name, id); err != nil {
			t.Errorf("the departed server cannot read %s from its time in the room: %v", id, err)
		}
	}
	refused := func(what string, err error) {
		t.Helper()
		var fe *federation.Error
		if !errors.As(err, &fe) || fe.Status != http.StatusNotFound {
			t.Errorf("%s: got %v, want 404", what, err)
		}
	}
	_, err := hub.eng.GetEvent(ctx, part.name, after)
	refused("/event after the departure", err)
	_, err = hub.eng.Backfill(ctx, part.name, roomID, []string{after}, 10)
	refused("/backfill from after the departure", err)
	_, err = hub.eng.StateIDs(ctx, part.name, roomID, after)
	refused("/state_ids at an event after the departure", err)
	if resp, err := hub.eng.Backfill(ctx, part.name, roomID, []string{kick}, 10); err != nil || len(resp.PDUs) == 0 {
		t.Errorf("/backfill up to the departure: %v, %v", resp, err)
	}
	_, err = hub.eng.GetEvent(ctx, "stranger.example", before)
	refused("/event by a server never in the room", err)

	// Invited again, the server reads everything.
	must(hub.eng.InviteUser(ctx, roomID, alice, bob))
	if _, err = hub.eng.GetEvent(ctx, part.name, after); err != nil {
		t.Errorf("an invited server cannot read the room: %v", err)
	}
}
