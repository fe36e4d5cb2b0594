package linearize

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/linearize/auth"
	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// eachNet runs a scenario over the in-process transport and over real HTTP on loopback.
func eachNet(t *testing.T, scenario func(t *testing.T, n network)) {
	t.Run("direct", func(t *testing.T) { scenario(t, &directNet{}) })
	t.Run("http", func(t *testing.T) { scenario(t, httpNet{}) })
}

// logIDs returns the event IDs of a room's log on an engine, oldest first.
func logIDs(t testing.TB, nd *node, roomID string) []string {
	t.Helper()
	evs := must(nd.eng.Events(testContext(t), roomID, 0, 100000))
	ids := make([]string, len(evs))
	for i, ev := range evs {
		ids[i] = ev.EventID
	}
	return ids
}

// waitHead waits until part's log ends with eventID.
func waitHead(t testing.TB, part *node, roomID, eventID string) {
	t.Helper()
	part.rec.waitFor(t, fmt.Sprintf("%s to reach %s", part.name, eventID), func() bool {
		ids := logIDs(t, part, roomID)
		return len(ids) > 0 && ids[len(ids)-1] == eventID
	})
}

// waitListener waits until nd's listener has been given nd's whole log of roomID.
func waitListener(t testing.TB, nd *node, roomID string) {
	t.Helper()
	ids := logIDs(t, nd, roomID)
	nd.rec.waitFor(t, "listener to catch up", func() bool {
		evs := nd.rec.roomEvents(roomID)
		return len(evs) > 0 && evs[len(evs)-1].EventID == ids[len(ids)-1]
	})
}

// checkMirror checks that part's log is a contiguous piece of hub's log (same events, same order, none twice) and
// that part's listener saw exactly its log, in order.
func checkMirror(t *testing.T, hub, part *node, roomID string, seen []*Event) {
	t.Helper()
	hubLog, partLog := logIDs(t, hub, roomID), logIDs(t, part, roomID)
	if len(partLog) == 0 {
		t.Fatalf("%s holds no events of %s", part.name, roomID)
	}
	start := slices.Index(hubLog, partLog[0])
	if start < 0 || start+len(partLog) > len(hubLog) || !slices.Equal(hubLog[start:start+len(partLog)], partLog) {
		t.Fatalf("participant log is not a piece of the hub's:\nhub  %v\npart %v", hubLog, partLog)
	}
	if seen == nil {
		waitListener(t, part, roomID)
		seen = part.rec.roomEvents(roomID)
	}
	// Delivery is at least once: a restart may repeat an event, which the listener drops by ID as the bridge does.
	ids := make([]string, 0, len(seen))
	got := make(map[string]bool)
	for _, ev := range seen {
		if !got[ev.EventID] {
			got[ev.EventID] = true
			ids = append(ids, ev.EventID)
		}
	}
	if !slices.Equal(ids, partLog) {
		t.Fatalf("listener saw %d events, log holds %d:\nseen %v\nlog  %v", len(ids), len(partLog), ids, partLog)
	}
}

func lastInvite(nd *node, roomID, target string) *Invite {
	nd.rec.lock.Lock()
	defer nd.rec.lock.Unlock()
	for i := len(nd.rec.invites) - 1; i >= 0; i-- {
		if inv := nd.rec.invites[i]; inv.RoomID == roomID && inv.Target == target {
			return inv
		}
	}
	return nil
}

// joinedPair creates a room on hub as alice, invites bob on part (over /invite, countersigned) and joins him.
func joinedPair(t testing.TB, hub, part *node) (roomID, alice, bob string) {
	t.Helper()
	ctx := testContext(t)
	alice, bob = userAt("alice", hub.name), userAt("bob", part.name)
	roomID = must(hub.eng.CreateRoom(ctx, alice, nil))
	inviteID := must(hub.eng.InviteUser(ctx, roomID, alice, bob))
	part.rec.waitFor(t, "bob's invite", func() bool { return lastInvite(part, roomID, bob) != nil })
	inv := lastInvite(part, roomID, bob)
	if inv.EventID != inviteID || inv.Sender != alice {
		t.Fatalf("invite %s from %s, want %s from %s", inv.EventID, inv.Sender, inviteID, alice)
	}
	stored := must(hub.eng.GetEventByID(ctx, inviteID))
	p := must(pdu.Parse(stored.PDU))
	if len(p.Signatures[part.name]) == 0 {
		t.Fatalf("the appended invite carries no countersignature of %s", part.name)
	}
	joinID := must(part.eng.Join(ctx, roomID, bob, hub.name))
	waitHead(t, part, roomID, joinID)
	return roomID, alice, bob
}

func TestInviteJoinMessagesBothWays(t *testing.T) {
	eachNet(t, func(t *testing.T, n network) {
		hub, part := n.newNode(t, "hub.test"), n.newNode(t, "part.test")
		ctx := testContext(t)
		roomID, alice, bob := joinedPair(t, hub, part)
		for i := 0; i < 5; i++ {
			must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text(fmt.Sprintf("alice %d", i)), time.Time{}))
			must(part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text(fmt.Sprintf("bob %d", i)), time.Time{}))
		}
		last := must(part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text("bob last"), time.Time{}))
		part.rec.waitFor(t, "bob's last echo", func() bool {
			evs := part.rec.roomEvents(roomID)
			return len(evs) > 0 && evs[len(evs)-1].LPDUID == last
		})
		checkMirror(t, hub, part, roomID, nil)
		checkMirror(t, hub, hub, roomID, nil)
		// The echo of a participant's event carries both signatures and matches its LPDU.
		evs := part.rec.roomEvents(roomID)
		echo := must(pdu.Parse(evs[len(evs)-1].PDU))
		if echo.HubServer != hub.name || len(echo.Signatures[hub.name]) == 0 || len(echo.Signatures[part.name]) == 0 {
			t.Fatalf("echo lacks hub_server or a signature: %s", evs[len(evs)-1].PDU)
		}
		if got := must(echo.LPDUID()); got != last {
			t.Fatalf("echo's LPDU ID %s, want %s", got, last)
		}
		// Bob (power 0) may not change power levels: the hub refuses it and the listener hears of it.
		bad := must(part.eng.SendEvent(ctx, roomID, bob, auth.TypePowerLevels, pdu.StringPtr(""),
			map[string]any{"users": map[string]int{bob: 100}}, time.Time{}))
		part.rec.waitFor(t, "refusal of bob's power levels", func() bool {
			part.rec.lock.Lock()
			defer part.rec.lock.Unlock()
			return part.rec.failed[bad] != ""
		})
		// Alice likewise, as hub-local sender, gets a typed error naming the rule.
		_, err := hub.eng.SendEvent(ctx, roomID, userAt("mallory", hub.name), "m.room.message", nil, text("hi"), time.Time{})
		var rule *auth.RuleError
		if !errors.Is(err, ErrForbidden) || !errors.As(err, &rule) || rule.Rule != "6" {
			t.Fatalf("unjoined sender got %v, want ErrForbidden by rule 6", err)
		}
	})
}

func TestLeaveKickBan(t *testing.T) {
	eachNet(t, func(t *testing.T, n network) {
		hub, part := n.newNode(t, "hub.test"), n.newNode(t, "part.test")
		ctx := testContext(t)
		roomID, alice, bob := joinedPair(t, hub, part)

		// Leave: bob's leave reaches the hub and comes back to us; later events do not.
		leaveID := must(part.eng.Leave(ctx, roomID, bob))
		part.rec.waitFor(t, "bob's leave echo", func() bool {
			evs := part.rec.roomEvents(roomID)
			return len(evs) > 0 && evs[len(evs)-1].LPDUID == leaveID
		})
		must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("after leave"), time.Time{}))

		// Invite again (bob's server is no longer in the room, so over /invite), join, then kick.
		must(hub.eng.InviteUser(ctx, roomID, alice, bob))
		joinID := must(part.eng.Join(ctx, roomID, bob, hub.name))
		waitHead(t, part, roomID, joinID)
		kickID := must(hub.eng.Kick(ctx, roomID, alice, bob, "out"))
		waitHead(t, part, roomID, kickID)
		afterKick := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("after kick"), time.Time{}))

		// Invite, join, ban: the ban reaches the banned user's server; a new join is refused.
		must(hub.eng.InviteUser(ctx, roomID, alice, bob))
		joinID = must(part.eng.Join(ctx, roomID, bob, hub.name))
		waitHead(t, part, roomID, joinID)
		banID := must(hub.eng.Ban(ctx, roomID, alice, bob, "gone"))
		waitHead(t, part, roomID, banID)
		_, err := part.eng.Join(ctx, roomID, bob, hub.name)
		var fe *federation.Error
		if !errors.As(err, &fe) || fe.Status != 403 || fe.ErrCode != federation.ErrCodeForbidden {
			t.Fatalf("banned user's join got %v, want 403 M_FORBIDDEN", err)
		}
		if _, err := part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text("still here?"), time.Time{}); !errors.Is(err, ErrNotJoined) {
			t.Fatalf("message from a server with nobody joined: %v, want ErrNotJoined", err)
		}
		partLog := logIDs(t, part, roomID)
		if slices.Contains(partLog, afterKick) {
			t.Fatalf("a kicked server received a later event")
		}
		// The mirror holds three pieces of the hub's log (after each join); each must be in order.
		hubLog := logIDs(t, hub, roomID)
		pos := -1
		for _, id := range partLog {
			i := slices.Index(hubLog, id)
			if i <= pos {
				t.Fatalf("participant log out of hub order at %s", id)
			}
			pos = i
		}
		waitListener(t, part, roomID)
		seen := part.rec.roomEvents(roomID)
		if len(seen) != len(partLog) {
			t.Fatalf("listener saw %d events, log holds %d", len(seen), len(partLog))
		}
	})
}

func TestKnock(t *testing.T) {
	eachNet(t, func(t *testing.T, n network) {
		hub, part := n.newNode(t, "hub.test"), n.newNode(t, "part.test")
		ctx := testContext(t)
		alice, carol := userAt("alice", hub.name), userAt("carol", part.name)
		roomID := must(hub.eng.CreateRoom(ctx, alice, []InitialState{
			{Type: auth.TypeJoinRules, Content: map[string]any{"join_rule": "knock"}},
			{Type: "m.room.name", Content: map[string]any{"name": "knockers"}},
		}))
		stripped := must(part.eng.Knock(ctx, roomID, carol, hub.name))
		if len(stripped) < 2 {
			t.Fatalf("knock answered %d stripped state events, want create and name at least", len(stripped))
		}
		hubLog := logIDs(t, hub, roomID)
		knock := must(hub.eng.GetEventByID(ctx, hubLog[len(hubLog)-1]))
		if p := must(pdu.Parse(knock.PDU)); membershipOf(p) != auth.MembershipKnock || p.Sender != carol {
			t.Fatalf("hub's head is not carol's knock: %s", knock.PDU)
		}
		must(hub.eng.InviteUser(ctx, roomID, alice, carol))
		joinID := must(part.eng.Join(ctx, roomID, carol, hub.name))
		waitHead(t, part, roomID, joinID)
		msg := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("welcome"), time.Time{}))
		waitHead(t, part, roomID, msg)
		checkMirror(t, hub, part, roomID, nil)
	})
}

// TestParticipantRestart stops the participant while the hub keeps sending, then starts it again: every event
// arrives once, in order, in its log and at its listener.
func TestParticipantRestart(t *testing.T) {
	eachNet(t, func(t *testing.T, n network) {
		hub, part := n.newNode(t, "hub.test"), n.newNode(t, "part.test")
		ctx := testContext(t)
		roomID, alice, _ := joinedPair(t, hub, part)
		var seen []*Event
		var last string
		for i := 0; i < 60; i++ {
			last = must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text(fmt.Sprintf("m%d", i)), time.Time{}))
			if i == 20 {
				seen = append(seen, part.rec.roomEvents(roomID)...)
				n.stop(t, part)
			}
			if i == 40 {
				n.start(t, part)
			}
		}
		waitHead(t, part, roomID, last)
		part.rec.waitFor(t, "listener to catch up", func() bool {
			evs := part.rec.roomEvents(roomID)
			return len(evs) > 0 && evs[len(evs)-1].EventID == last
		})
		// The listener's cursor survived the restart: the new recorder saw only what the old one had not.
		checkMirror(t, hub, part, roomID, append(seen, part.rec.roomEvents(roomID)...))
	})
}

// TestHubRestartWithPendingFanout queues events for a participant that is down, restarts the hub, then brings the
// participant back: the persisted outbox delivers everything once, in order.
func TestHubRestartWithPendingFanout(t *testing.T) {
	eachNet(t, func(t *testing.T, n network) {
		hub, part := n.newNode(t, "hub.test"), n.newNode(t, "part.test")
		ctx := testContext(t)
		roomID, alice, _ := joinedPair(t, hub, part)
		seen := part.rec.roomEvents(roomID)
		n.stop(t, part)
		var last string
		for i := 0; i < 120; i++ {
			last = must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text(fmt.Sprintf("m%d", i)), time.Time{}))
		}
		n.stop(t, hub)
		n.start(t, part)
		n.start(t, hub)
		waitHead(t, part, roomID, last)
		// Both sides work on the reloaded state: the hub checks bob's LPDU against it, the participant the hub's PDU.
		bob := userAt("bob", part.name)
		echo := must(part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text("after restart"), time.Time{}))
		part.rec.waitFor(t, "bob's echo after the restart", func() bool {
			evs := part.rec.roomEvents(roomID)
			return len(evs) > 0 && evs[len(evs)-1].LPDUID == echo
		})
		last = must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("hub after restart"), time.Time{}))
		waitHead(t, part, roomID, last)
		waitListener(t, part, roomID)
		checkMirror(t, hub, part, roomID, append(seen, part.rec.roomEvents(roomID)...))
	})
}
