package linearize

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/pdu"
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
		if _, err := hub.eng.Federation().GetEvent(ctx, part.name, id); err != nil {
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
	_, err := hub.eng.Federation().GetEvent(ctx, part.name, after)
	refused("/event after the departure", err)
	_, err = hub.eng.Federation().Backfill(ctx, part.name, roomID, []string{after}, 10)
	refused("/backfill from after the departure", err)
	_, err = hub.eng.Federation().StateIDs(ctx, part.name, roomID, after)
	refused("/state_ids at an event after the departure", err)
	if resp, err := hub.eng.Federation().Backfill(ctx, part.name, roomID, []string{kick}, 10); err != nil || len(resp.PDUs) == 0 {
		t.Errorf("/backfill up to the departure: %v, %v", resp, err)
	}
	_, err = hub.eng.Federation().GetEvent(ctx, "stranger.example", before)
	refused("/event by a server never in the room", err)

	// Invited again, the server reads everything.
	must(hub.eng.InviteUser(ctx, roomID, alice, bob))
	if _, err = hub.eng.Federation().GetEvent(ctx, part.name, after); err != nil {
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

// TestHistoryVisibilityForServers: under "joined" a server sees what its users were joined for: not the messages from
// before, nor from while it was only invited (404 on /event, redacted in /backfill), but its own invite and join, what
// came after, and what was sent while the room was still "shared".
func TestHistoryVisibilityForServers(t *testing.T) {
	ctx := testContext(t)
	hub := newHTTPNode(t, nil)
	part := newHTTPNode(t, nil)
	alice, bob := userAt("alice", hub.name), userAt("bob", part.name)
	roomID := must(hub.eng.CreateRoom(ctx, alice, nil))
	underShared := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("said while shared"), time.Time{}))
	empty := ""
	must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.history_visibility", &empty, map[string]any{"history_visibility": "joined"}, time.Time{}))
	before := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("before bob"), time.Time{}))
	invite := must(hub.eng.InviteUser(ctx, roomID, alice, bob))
	part.rec.waitFor(t, "bob's invite", func() bool { return lastInvite(part, roomID, bob) != nil })
	whileInvited := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("while bob is invited"), time.Time{}))
	join := must(part.eng.Join(ctx, roomID, bob, hub.name))
	waitHead(t, part, roomID, join)
	after := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("after bob joined"), time.Time{}))

	for _, id := range []string{underShared, invite, join, after} {
		if _, err := hub.eng.Federation().GetEvent(ctx, part.name, id); err != nil {
			t.Errorf("bob's server cannot read %s: %v", id, err)
		}
	}
	for _, id := range []string{before, whileInvited} {
		var fe *federation.Error
		if _, err := hub.eng.Federation().GetEvent(ctx, part.name, id); !errors.As(err, &fe) || fe.Status != http.StatusNotFound {
			t.Errorf("bob's server read %s from before its join: %v", id, err)
		}
	}
	resp := must(hub.eng.Federation().Backfill(ctx, part.name, roomID, []string{after}, 100))
	bodies := make(map[string]bool)
	for _, raw := range resp.PDUs {
		p := must(pdu.Parse(raw))
		var c struct {
			Body string `json:"body"`
		}
		_ = json.Unmarshal(p.Content, &c)
		if c.Body != "" {
			bodies[c.Body] = true
		}
	}
	for body, want := range map[string]bool{"said while shared": true, "before bob": false,
		"while bob is invited": false, "after bob joined": true} {
		if bodies[body] != want {
			t.Errorf("backfill shows %q: %v, want %v (bodies %v)", body, bodies[body], want, bodies)
		}
	}
	if n := len(resp.PDUs); n < 7 {
		t.Errorf("backfill returned %d events, want the whole log with hidden ones redacted in place", n)
	}
	// The hub's own users see everything: the filter is only for other servers.
	if _, err := hub.eng.Federation().GetEvent(ctx, hub.name, before); err != nil {
		t.Errorf("the hub cannot read its own room: %v", err)
	}
}
