package linearize

import (
	"encoding/json"
	"testing"
	"time"
)

// loggedContent is the content of an event of nd's log.
func loggedContent(t *testing.T, nd *node, eventID string) map[string]any {
	t.Helper()
	stored := must(nd.eng.GetEventByID(testContext(t), eventID))
	var ev struct {
		Content map[string]any `json:"content"`
	}
	if err := json.Unmarshal(stored.PDU, &ev); err != nil {
		t.Fatal(err)
	}
	return ev.Content
}

// TestJoinWithProfile: a join made through make_join/send_join, and a join to a room we host, carry the display name
// and avatar in the join event itself; the hub's log has them from the join on.
func TestJoinWithProfile(t *testing.T) {
	eachNet(t, func(t *testing.T, n network) {
		hub, part := n.newNode(t, "hub.test"), n.newNode(t, "part.test")
		ctx := testContext(t)
		alice, bob, carol := userAt("alice", hub.name), userAt("bob", part.name), userAt("carol", hub.name)
		roomID := must(hub.eng.CreateRoom(ctx, alice, []InitialState{{Type: "m.room.join_rules", Content: map[string]any{"join_rule": "public"}}}))
		joinID := must(part.eng.JoinWithProfile(ctx, roomID, bob, hub.name, "Bob", "mxc://part.test/bob"))
		waitHead(t, part, roomID, joinID)
		got := loggedContent(t, hub, joinID)
		if got["membership"] != "join" || got["displayname"] != "Bob" || got["avatar_url"] != "mxc://part.test/bob" {
			t.Errorf("bob's join on the hub = %v, want membership join, displayname Bob and his avatar", got)
		}
		// Without an avatar, none is sent.
		local := must(hub.eng.JoinWithProfile(ctx, roomID, carol, hub.name, "Carol", ""))
		got = loggedContent(t, hub, local)
		if _, hasAvatar := got["avatar_url"]; got["membership"] != "join" || got["displayname"] != "Carol" || hasAvatar {
			t.Errorf("carol's hub-local join = %v, want membership join and displayname Carol only", got)
		}
	})
}

// TestInviteShowsInviter: an invite over /invite carries the inviter's member event in its stripped state, so the
// invited user's server can show the inviter by name before it is in the room.
func TestInviteShowsInviter(t *testing.T) {
	eachNet(t, func(t *testing.T, n network) {
		hub, part := n.newNode(t, "hub.test"), n.newNode(t, "part.test")
		ctx := testContext(t)
		alice, bob := userAt("alice", hub.name), userAt("bob", part.name)
		roomID := must(hub.eng.CreateRoom(ctx, alice, []InitialState{{Type: "m.room.name", Content: map[string]any{"name": "Named"}}}))
		must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.member", &alice, map[string]any{"membership": "join", "displayname": "Alice"}, time.Time{}))
		must(hub.eng.InviteUser(ctx, roomID, alice, bob))
		part.rec.waitFor(t, "bob's invite", func() bool { return lastInvite(part, roomID, bob) != nil })
		var inviter, name map[string]any
		for _, raw := range lastInvite(part, roomID, bob).StrippedState {
			var ev struct {
				Type     string         `json:"type"`
				StateKey string         `json:"state_key"`
				Content  map[string]any `json:"content"`
			}
			if err := json.Unmarshal(raw, &ev); err != nil {
				t.Fatal(err)
			}
			switch {
			case ev.Type == "m.room.member" && ev.StateKey == alice:
				inviter = ev.Content
			case ev.Type == "m.room.member":
				t.Errorf("stripped state shows the member event of %s, who did not invite", ev.StateKey)
			case ev.Type == "m.room.name":
				name = ev.Content
			}
		}
		if inviter["displayname"] != "Alice" || inviter["membership"] != "join" {
			t.Errorf("the inviter's stripped member event = %v, want alice's join as Alice", inviter)
		}
		if name["name"] != "Named" {
			t.Errorf("the stripped room name = %v", name)
		}
	})
}
