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

// TestDeliveriesShowWhatIsStuck: with the participant down, the hub's status for the room shows the event queued for
// it and the failure; once the participant is back, nothing is queued and the failure is gone.
func TestDeliveriesShowWhatIsStuck(t *testing.T) {
	ctx := testContext(t)
	hub := newHTTPNode(t, nil)
	part := newHTTPNode(t, nil)
	roomID, alice, bob := joinedPair(t, hub, part)
	if ds := must(part.eng.Deliveries(ctx, roomID)); len(ds) != 1 || ds[0].Server != hub.name {
		t.Fatalf("the participant's deliveries %+v, want just the hub", ds)
	}
	httpNet{}.stop(t, part)
	must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("while bob's server is down"), time.Time{}))
	var stuck Delivery
	hub.rec.waitFor(t, "the failed send", func() bool {
		ds := must(hub.eng.Deliveries(ctx, roomID))
		if len(ds) != 1 {
			t.Fatalf("hub deliveries %+v, want one server", ds)
		}
		stuck = ds[0]
		return stuck.RetryCount > 0
	})
	if stuck.Server != part.name || stuck.Queued < 1 || stuck.LastError == "" || !stuck.NextAttempt.After(time.Now().Add(-time.Second)) {
		t.Fatalf("stuck delivery %+v, want %s with the event queued, an error and a next attempt", stuck, part.name)
	}
	httpNet{}.start(t, part)
	// A request from the participant tells the hub it is back, which retries at once rather than after its backoff.
	must(part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text("back"), time.Time{}))
	hub.rec.waitFor(t, "the delivery after the restart", func() bool {
		d := must(hub.eng.Deliveries(ctx, roomID))[0]
		return d.Queued == 0 && d.RetryCount == 0 && d.LastError == ""
	})
}
