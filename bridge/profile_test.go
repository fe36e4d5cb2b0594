package bridge

import (
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/linearize"
)

// firstJoinOn returns the content of user's first join in the hub's log of roomID, nil if there is none.
func firstJoinOn(ts *twoServers, roomID, user string) map[string]any {
	ts.rec.lock.Lock()
	defer ts.rec.lock.Unlock()
	for _, ev := range ts.rec.events {
		if ev.RoomID == roomID && ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == user && ev.Sender == user {
			c := lmContentOf(ev)
			if c["membership"] == "join" {
				return c
			}
		}
	}
	return nil
}

func lmContentOf(ev *linearize.Event) map[string]any {
	c, _ := parseContent(ev.Content)
	return c
}

// TestParticipantJoinsCarryTheProfile: when the bridge joins a Matrix user to a room another hub owns (the user who
// links, a member joining later, the user of a portal), the join the hub appends has their display name and avatar:
// the hub's side knows them by name from their first event, not from a second member event after it.
func TestParticipantJoinsCarryTheProfile(t *testing.T) {
	ctx := testContext(t)
	ts := newTwoServers(t, ctx)
	tb := &testBridge{Bridge: ts.br, mx: ts.mx}
	tb.seedDAGRoom()
	ts.mx.setState(mkEvent(dagRoom, "$join-alice", alice, event.StateMember, sk(string(alice)),
		map[string]any{"membership": "join", "displayname": "Alice", "avatar_url": "mxc://hs.example/alice"}))
	roomID, err := ts.remote.CreateRoom(ctx, ts.bob, []linearize.InitialState{{Type: "m.room.join_rules", Content: map[string]any{"join_rule": "public"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = ts.br.LinkToLM(ctx, dagRoom, roomID, ts.remote.ServerName(), alice); err != nil {
		t.Fatal(err)
	}
	// carol was joined before the link: projected with her profile too.
	carolLM, _ := ts.br.users.LMUserOf(carol)
	eventually(t, "alice's and carol's joins on the hub", func() bool {
		return firstJoinOn(ts, roomID, ts.alice) != nil && firstJoinOn(ts, roomID, carolLM) != nil
	})
	if c := firstJoinOn(ts, roomID, ts.alice); c["displayname"] != "Alice" || c["avatar_url"] != "mxc://hs.example/alice" {
		t.Errorf("alice's first join on the hub = %v, want her display name and avatar", c)
	}
	if c := firstJoinOn(ts, roomID, carolLM); c["displayname"] != "carol" {
		t.Errorf("carol's first join on the hub = %v, want her display name", c)
	}
	dave := id.UserID("@dave:hs.example")
	daveLM, _ := ts.br.users.LMUserOf(dave)
	join := mkEvent(dagRoom, "$davejoin", dave, event.StateMember, sk(string(dave)), map[string]any{"membership": "join", "displayname": "Dave"})
	if err = ts.br.HandleDAGEvent(ctx, join); err != nil {
		t.Fatal(err)
	}
	eventually(t, "dave's join on the hub", func() bool { return firstJoinOn(ts, roomID, daveLM) != nil })
	if c := firstJoinOn(ts, roomID, daveLM); c["displayname"] != "Dave" {
		t.Errorf("dave's first join on the hub = %v, want display name Dave", c)
	}
	// A portal's user joins with their profile as well.
	other, err := ts.remote.CreateRoom(ctx, ts.bob, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = ts.remote.InviteUser(ctx, other, ts.bob, ts.alice); err != nil {
		t.Fatal(err)
	}
	var portal id.RoomID
	eventually(t, "the portal link", func() bool {
		l, _ := ts.br.DB().GetLinkByLMRoom(ctx, other)
		if l != nil {
			portal = l.DAGRoomID
		}
		return l != nil && l.Status == bridgedb.LinkPendingJoin
	})
	portalJoin := mkEvent(portal, "$aliceportal", alice, event.StateMember, sk(string(alice)), map[string]any{"membership": "join", "displayname": "Alice in the portal"})
	if err = ts.br.HandleDAGEvent(ctx, portalJoin); err != nil {
		t.Fatal(err)
	}
	eventually(t, "alice's join of the portal's room on the hub", func() bool { return firstJoinOn(ts, other, ts.alice) != nil })
	if c := firstJoinOn(ts, other, ts.alice); c["displayname"] != "Alice in the portal" {
		t.Errorf("alice's first join of the portal's room = %v, want her display name", c)
	}
}

// TestPortalGhostHasProfileBeforeCreating: the inviter's ghost creates a portal room, its first join, with the
// inviter's display name already set: from the invite's stripped state, or the LM user ID when it names none.
func TestPortalGhostHasProfileBeforeCreating(t *testing.T) {
	ctx := testContext(t)
	ts := newTwoServers(t, ctx)
	dana := "@dana:" + ts.remote.ServerName()
	danaGhost, _ := ts.br.users.GhostOf(dana)
	for _, tc := range []struct {
		inviter, ghost id.UserID
		lmInviter      string
		name           string
		want           string
	}{
		{lmInviter: ts.bob, ghost: ts.ghost, name: "Bob on LM", want: "Bob on LM"},
		{lmInviter: dana, ghost: danaGhost, want: dana},
	} {
		roomID, err := ts.remote.CreateRoom(ctx, tc.lmInviter, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.name != "" {
			if _, err = ts.remote.SendEvent(ctx, roomID, tc.lmInviter, "m.room.member", &tc.lmInviter,
				map[string]any{"membership": "join", "displayname": tc.name}, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
		ts.mx.reset()
		if _, err = ts.remote.InviteUser(ctx, roomID, tc.lmInviter, ts.alice); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the portal of "+roomID, ts.ghostCall("create", func(c matrixCall) bool { return c.Sender == tc.ghost }))
		ts.mx.lock.Lock()
		calls := slices.Clone(ts.mx.calls)
		ts.mx.lock.Unlock()
		create := slices.IndexFunc(calls, func(c matrixCall) bool { return c.Op == "create" })
		profile := slices.IndexFunc(calls, func(c matrixCall) bool { return c.Op == "profile" && c.Sender == tc.ghost })
		if profile < 0 || profile > create || calls[profile].Content["displayname"] != tc.want {
			t.Errorf("invite from %s: profile call %d (%+v), create call %d; want the profile %q set before the room is created",
				tc.lmInviter, profile, calls[max(profile, 0)], create, tc.want)
		}
	}
}
