package e2e

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/internal/tesths"
	"github.com/lmbridge/lmbridge/linearize"
)

// The end-to-end tests of issue 14's items: direct chats with LM users, `!lm resolve`, backfill when a link starts
// from an existing LM room, deletions made on the homeserver, `!lm sync`, `!lm help` and the "talk" level. Each runs
// on a real Dendrite and a real Synapse, with lmbridge's parts in this process and a second LM server on loopback.

// startIssue14Stack is the bridge stack with backfill on and "*" at the "talk" level (the old "relay").
func startIssue14Stack(t *testing.T, kind tesths.Kind) (context.Context, *bridgeStack) {
	ctx := testContext(t)
	ctx = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).WithContext(ctx)
	st := startBridgeStackWith(ctx, t, kind, sqliteDB, func(cfg *config.Config) {
		cfg.Bridge.BackfillLimit = 50
		cfg.Bridge.Permissions = map[string]string{"*": "talk", "@alice:" + tesths.DefaultServerName: "user"}
	})
	return ctx, st
}

// botAnswer sends a command and returns the bot's answer to it.
func botAnswer(ctx context.Context, t *testing.T, st *bridgeStack, client *mautrix.Client, room id.RoomID, body string) string {
	t.Helper()
	return answerOf(ctx, t, st.bot, client, room, body)
}

// answerOf sends a command and returns bot's answer to it.
func answerOf(ctx context.Context, t *testing.T, bot id.UserID, client *mautrix.Client, room id.RoomID, body string) string {
	t.Helper()
	cmd := sendText(ctx, t, client, room, map[string]any{"msgtype": "m.text", "body": body})
	answer := findDAG(ctx, t, client, room, "the bot's answer to "+body, func(evt *event.Event) bool {
		return evt.Sender == bot && replyTarget(rawContent(evt)) == string(cmd)
	})
	return bodyOf(answer)
}

// roomWithBot is a room alice made with the bot in it, at power 100.
func roomWithBot(ctx context.Context, t *testing.T, st *bridgeStack, alice *mautrix.Client, name string) id.RoomID {
	t.Helper()
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: name, Invite: []id.UserID{st.bot},
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{alice.UserID: 100, st.bot: 100}}})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "the bot to join "+name, func() bool {
		members, err := alice.JoinedMembers(ctx, created.RoomID)
		return err == nil && hasMember(members, st.bot)
	})
	return created.RoomID
}

// waitActiveLink waits for the DAG room's link.
func waitActiveLink(ctx context.Context, t *testing.T, st *bridgeStack, room id.RoomID) *bridgedb.Link {
	t.Helper()
	var link *bridgedb.Link
	waitUntil(t, 60*time.Second, "the link of "+string(room), func() bool {
		link, _ = st.br.DB().GetLinkByDAGRoom(ctx, room)
		return link != nil && link.Status == bridgedb.LinkActive
	})
	return link
}

// waitLMInvite waits for the peer to hear of user's invite into the LM room.
func waitLMInvite(t *testing.T, st *bridgeStack, lmRoom, user string) {
	t.Helper()
	waitUntil(t, 60*time.Second, "the LM invite of "+user, func() bool {
		return st.peer.invited(lmRoom, user)
	})
}

// TestDirectChats: inviting an LM user's ghost into a new room makes a direct chat with them, so does `!lm pm`; bad
// input gets a notice.
func TestDirectChats(t *testing.T) {
	tesths.ForEachKind(t, func(t *testing.T, kind tesths.Kind) {
		ctx, st := startIssue14Stack(t, kind)
		alice := st.hs.RegisterUserT(t, "alice", "alice-password", false)
		bob := "@bob:" + st.peer.ServerName()
		bobGhost, _ := st.users.GhostOf(bob)
		aliceLM, _ := st.users.LMUserOf(alice.UserID)

		t.Run("inviting a ghost", func(t *testing.T) {
			// As Element makes a direct chat: trusted_private_chat, is_direct, the other user invited.
			created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true,
				Invite: []id.UserID{bobGhost}})
			if err != nil {
				t.Fatal(err)
			}
			room := created.RoomID
			link := waitActiveLink(ctx, t, st, room)
			if link.Role != bridgedb.RoleHub || link.HubServer != st.ours.ServerName() {
				t.Errorf("link %+v, want this bridge as hub", link)
			}
			members, err := alice.JoinedMembers(ctx, room)
			if err != nil || !hasMember(members, bobGhost) || !hasMember(members, st.bot) {
				t.Fatalf("members %v (%v), want bob's ghost and the bot", members, err)
			}
			findDAG(ctx, t, alice, room, "the notice that the room is a direct chat", func(evt *event.Event) bool {
				return evt.Sender == st.bot && strings.Contains(bodyOf(evt), "direct chat with "+bob)
			})
			waitLMInvite(t, st, link.LMRoomID, bob)
			if _, err = st.peer.Join(ctx, link.LMRoomID, bob, link.HubServer); err != nil {
				t.Fatalf("bob failed to join: %v", err)
			}
			sendText(ctx, t, alice, room, map[string]any{"msgtype": "m.text", "body": "hi bob, directly"})
			findLM(t, st.peer, "alice's direct message on LM", func(ev *linearize.Event) bool {
				return ev.RoomID == link.LMRoomID && ev.Sender == aliceLM && lmBody(ev) == "hi bob, directly"
			})
			if _, err = st.peer.SendEvent(ctx, link.LMRoomID, bob, "m.room.message", nil,
				map[string]any{"msgtype": "m.text", "body": "hi alice, directly"}, time.Time{}); err != nil {
				t.Fatal(err)
			}
			findDAG(ctx, t, alice, room, "bob's direct answer on Matrix", func(evt *event.Event) bool {
				return evt.Sender == bobGhost && bodyOf(evt) == "hi alice, directly"
			})
		})

		t.Run("inviting a ghost where the bot is", func(t *testing.T) {
			dave := "@dave:" + st.peer.ServerName()
			daveGhost, _ := st.users.GhostOf(dave)
			room := roomWithBot(ctx, t, st, alice, "room with the bot")
			if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: daveGhost}); err != nil {
				t.Fatal(err)
			}
			link := waitActiveLink(ctx, t, st, room)
			waitLMInvite(t, st, link.LMRoomID, dave)
			findDAG(ctx, t, alice, room, "the notice that the room is a direct chat", func(evt *event.Event) bool {
				return evt.Sender == st.bot && strings.Contains(bodyOf(evt), "direct chat with "+dave)
			})
		})

		control := roomWithBot(ctx, t, st, alice, "control room")
		t.Run("!lm pm", func(t *testing.T) {
			carol := "@carol:" + st.peer.ServerName()
			carolGhost, _ := st.users.GhostOf(carol)
			answer := botAnswer(ctx, t, st, alice, control, "!lm pm "+carol)
			if !strings.Contains(answer, "Made a direct chat with "+carol) {
				t.Fatalf("pm answer = %q", answer)
			}
			var room id.RoomID
			for _, f := range strings.Fields(answer) {
				if strings.HasPrefix(f, "!") {
					room = id.RoomID(strings.TrimSuffix(f, "."))
				}
			}
			if room == "" {
				t.Fatalf("no room ID in %q", answer)
			}
			if _, err := alice.JoinRoomByID(ctx, room); err != nil {
				t.Fatalf("alice failed to join the direct chat: %v", err)
			}
			link := waitActiveLink(ctx, t, st, room)
			waitLMInvite(t, st, link.LMRoomID, carol)
			if _, err := st.peer.Join(ctx, link.LMRoomID, carol, link.HubServer); err != nil {
				t.Fatalf("carol failed to join: %v", err)
			}
			// alice's join may come before or after carol's, so it is read from the hub's state, not from what the
			// peer saw after its join.
			waitUntil(t, 60*time.Second, "alice on LM", func() bool {
				state, err := st.ours.CurrentState(ctx, link.LMRoomID)
				return err == nil && slices.ContainsFunc(state, func(e linearize.StateEntry) bool {
					return e.Type == "m.room.member" && e.StateKey == aliceLM && e.Membership == "join"
				})
			})
			sendText(ctx, t, alice, room, map[string]any{"msgtype": "m.text", "body": "hi carol"})
			findLM(t, st.peer, "alice's message to carol on LM", func(ev *linearize.Event) bool {
				return ev.RoomID == link.LMRoomID && ev.Sender == aliceLM && lmBody(ev) == "hi carol"
			})
			if _, err := st.peer.SendEvent(ctx, link.LMRoomID, carol, "m.room.message", nil,
				map[string]any{"msgtype": "m.text", "body": "hi alice, from carol"}, time.Time{}); err != nil {
				t.Fatal(err)
			}
			findDAG(ctx, t, alice, room, "carol's answer on Matrix", func(evt *event.Event) bool {
				return evt.Sender == carolGhost && bodyOf(evt) == "hi alice, from carol"
			})
		})

		t.Run("!lm resolve, !lm help and bad input", func(t *testing.T) {
			if a := botAnswer(ctx, t, st, alice, control, "!lm resolve "+bob); !strings.Contains(a, "which answers") ||
				!strings.Contains(a, string(bobGhost)) {
				t.Errorf("resolve of a live server = %q", a)
			}
			// Giving the ghost's ID is the same as giving the LM user's.
			if a := botAnswer(ctx, t, st, alice, control, "!lm resolve "+string(bobGhost)); !strings.Contains(a, bob+" is on") {
				t.Errorf("resolve of the ghost = %q", a)
			}
			deadPort, err := tesths.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			dead := "@dan:127.0.0.1:" + strconv.Itoa(deadPort)
			if a := botAnswer(ctx, t, st, alice, control, "!lm resolve "+dead); !strings.Contains(a, "does not answer") {
				t.Errorf("resolve of a dead server = %q", a)
			}
			if a := botAnswer(ctx, t, st, alice, control, "!lm pm "+dead); !strings.Contains(a, "their server does not answer") {
				t.Errorf("pm to a dead server = %q", a)
			}
			// A ghost of a user whose server does not answer says so and leaves.
			deadGhost, _ := st.users.GhostOf(dead)
			deadRoom, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true,
				Invite: []id.UserID{deadGhost}})
			if err != nil {
				t.Fatal(err)
			}
			waitUntil(t, 60*time.Second, "the ghost of a dead server's user to decline", func() bool {
				return declined(ctx, t, alice, deadRoom.RoomID, deadGhost, "does not answer")
			})
			for body, want := range map[string]string{
				"!lm resolve bob":                       "an LM user ID looks like @bob:remote.example",
				"!lm pm @bob":                           "Could not start a direct chat",
				"!lm pm @x:" + tesths.DefaultServerName: "user of this homeserver",
				"!lm pm @x:bad/server":                  "is not a server name",
				"!lm pm " + aliceLM:                     "talk to them on Matrix",
				"!lm pm":                                "Usage",
				"!lm resolve @eve:" + strings.Repeat("a", 300) + ".x": "Could not resolve",
			} {
				if a := botAnswer(ctx, t, st, alice, control, body); !strings.Contains(a, want) {
					t.Errorf("%q answered %q, want %q in it", body, a, want)
				}
			}
			help := botAnswer(ctx, t, st, alice, control, "!lm help")
			exampleGhost, _ := st.users.GhostOf("@bob:remote.example")
			for _, want := range []string{"!lm pm <LM user ID>", "!lm resolve <LM user ID>", "!lm sync", "@bob:remote.example",
				string(exampleGhost), aliceLM, "!lm link <LM room ID> via <hub server>"} {
				if !strings.Contains(help, want) {
					t.Errorf("help lacks %q:\n%s", want, help)
				}
			}
			// eve has the "talk" level: her commands are refused, and so is her direct chat (the ghost says why and leaves).
			eve := st.hs.RegisterUserT(t, "eve", "eve-password", false)
			if _, err = eve.JoinRoomByID(ctx, control); err != nil {
				t.Fatal(err)
			}
			if a := botAnswer(ctx, t, st, eve, control, "!lm pm "+bob); !strings.Contains(a, `gives you "talk"`) {
				t.Errorf("pm by a talk user = %q", a)
			}
			created, err := eve.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true,
				Invite: []id.UserID{bobGhost}})
			if err != nil {
				t.Fatal(err)
			}
			waitUntil(t, 60*time.Second, "the ghost to decline eve's invite", func() bool {
				return declined(ctx, t, eve, created.RoomID, bobGhost, `"talk"`)
			})
			if l, _ := st.br.DB().GetLinkByDAGRoom(ctx, created.RoomID); l != nil {
				t.Errorf("eve's room was linked: %+v", l)
			}
		})
	})
}

// declined says whether ghost said why in a notice and then left the room.
func declined(ctx context.Context, t *testing.T, client *mautrix.Client, room id.RoomID, ghost id.UserID, why string) bool {
	t.Helper()
	said := false
	for _, evt := range roomTimeline(ctx, t, client, room) {
		if evt.Sender == ghost && rawContent(evt)["msgtype"] == "m.notice" && strings.Contains(bodyOf(evt), why) {
			said = true
		}
		if said && evt.Type == event.StateMember && evt.StateKey != nil && *evt.StateKey == string(ghost) &&
			rawContent(evt)["membership"] == "leave" {
			return true
		}
	}
	return false
}

// TestBackfillOnLink: linking an existing LM room brings its latest 50 messages in, in order, as the ghosts, with
// their timestamps; linking again doubles nothing; accepting an LM invite backfills too.
func TestBackfillOnLink(t *testing.T) {
	tesths.ForEachKind(t, func(t *testing.T, kind tesths.Kind) {
		ctx, st := startIssue14Stack(t, kind)
		alice := st.hs.RegisterUserT(t, "alice", "alice-password", false)
		frank := "@frank:" + st.peer.ServerName()
		frankGhost, _ := st.users.GhostOf(frank)
		lmRoom, err := st.peer.CreateRoom(ctx, frank, []linearize.InitialState{
			{Type: "m.room.join_rules", Content: map[string]any{"join_rule": "public"}},
			{Type: "m.room.name", Content: map[string]any{"name": "Frank's history"}}})
		if err != nil {
			t.Fatal(err)
		}
		const sent = 60
		base := time.Now().Add(-2 * time.Hour).Truncate(time.Millisecond)
		for i := range sent {
			if _, err = st.peer.SendEvent(ctx, lmRoom, frank, "m.room.message", nil,
				map[string]any{"msgtype": "m.text", "body": "hist-" + strconv.Itoa(i)}, base.Add(time.Duration(i)*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
		room := roomWithBot(ctx, t, st, alice, "backfilled room")
		if a := botAnswer(ctx, t, st, alice, room, "!lm link "+lmRoom+" via "+st.peer.ServerName()); !strings.Contains(a, "Linked") {
			t.Fatalf("link answer = %q", a)
		}
		history := func() []*event.Event {
			var out []*event.Event
			for _, evt := range roomTimeline(ctx, t, alice, room) {
				if strings.HasPrefix(bodyOf(evt), "hist-") {
					out = append(out, evt)
				}
			}
			return out
		}
		checkHistory := func(what string) {
			t.Helper()
			got := history()
			if len(got) != 50 {
				t.Fatalf("%s: %d history messages in the Matrix room, want 50", what, len(got))
			}
			for i, evt := range got {
				n := sent - 50 + i
				if bodyOf(evt) != "hist-"+strconv.Itoa(n) || evt.Sender != frankGhost {
					t.Fatalf("%s: history message %d is %q from %s, want hist-%d from %s", what, i, bodyOf(evt), evt.Sender, n, frankGhost)
				}
				if want := base.Add(time.Duration(n) * time.Second).UnixMilli(); evt.Timestamp != want {
					t.Errorf("%s: hist-%d has ts %d, want %d", what, n, evt.Timestamp, want)
				}
			}
		}
		checkHistory("after the link")
		if _, err = st.peer.SendEvent(ctx, lmRoom, frank, "m.room.message", nil,
			map[string]any{"msgtype": "m.text", "body": "live-1"}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		findDAG(ctx, t, alice, room, "frank's live message after the history", func(evt *event.Event) bool {
			return evt.Sender == frankGhost && bodyOf(evt) == "live-1"
		})

		// Unlinked and linked again: the history is there once.
		if a := botAnswer(ctx, t, st, alice, room, "!lm unlink"); !strings.Contains(a, "no longer bridged") {
			t.Fatalf("unlink answer = %q", a)
		}
		if a := botAnswer(ctx, t, st, alice, room, "!lm link "+lmRoom+" via "+st.peer.ServerName()); !strings.Contains(a, "Linked") {
			t.Fatalf("second link answer = %q", a)
		}
		if _, err = st.peer.SendEvent(ctx, lmRoom, frank, "m.room.message", nil,
			map[string]any{"msgtype": "m.text", "body": "live-2"}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		findDAG(ctx, t, alice, room, "frank's message after the second link", func(evt *event.Event) bool {
			return evt.Sender == frankGhost && bodyOf(evt) == "live-2"
		})
		checkHistory("after linking again")
		live := 0
		for _, evt := range roomTimeline(ctx, t, alice, room) {
			if bodyOf(evt) == "live-1" {
				live++
			}
		}
		if live != 1 {
			t.Errorf("live-1 is in the Matrix room %d times, want 1", live)
		}

		t.Run("accepting an LM invite", func(t *testing.T) {
			dana := st.hs.RegisterUserT(t, "dana", "dana-password", false)
			danaLM, _ := st.users.LMUserOf(dana.UserID)
			invRoom, err := st.peer.CreateRoom(ctx, frank, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				if _, err = st.peer.SendEvent(ctx, invRoom, frank, "m.room.message", nil,
					map[string]any{"msgtype": "m.text", "body": "portal-hist-" + strconv.Itoa(i)}, time.Time{}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err = st.peer.InviteUser(ctx, invRoom, frank, danaLM); err != nil {
				t.Fatal(err)
			}
			portal := joinInvitedRoom(ctx, t, dana, "dana's invite to the portal")
			var got []string
			waitUntil(t, 60*time.Second, "the portal's history", func() bool {
				got = got[:0]
				for _, evt := range roomTimeline(ctx, t, dana, portal) {
					if strings.HasPrefix(bodyOf(evt), "portal-hist-") && evt.Sender == frankGhost {
						got = append(got, bodyOf(evt))
					}
				}
				return len(got) >= 5
			})
			want := []string{"portal-hist-0", "portal-hist-1", "portal-hist-2", "portal-hist-3", "portal-hist-4"}
			if !slices.Equal(got, want) {
				t.Errorf("portal history %v, want %v", got, want)
			}
		})
	})
}

// TestDeletionsCross: a message deleted on the homeserver is deleted on LM, Dendrite included (through the
// redaction poll, since Dendrite pushes no redactions).
func TestDeletionsCross(t *testing.T) {
	tesths.ForEachKind(t, func(t *testing.T, kind tesths.Kind) {
		ctx, st := startIssue14Stack(t, kind)
		go st.view.RunRedactionPoll(ctx, time.Second)
		alice := st.hs.RegisterUserT(t, "alice", "alice-password", false)
		aliceLM, _ := st.users.LMUserOf(alice.UserID)
		room, link := linkedWithBob(ctx, t, st, alice, "deletions")
		msg := sendText(ctx, t, alice, room, map[string]any{"msgtype": "m.text", "body": "to be deleted"})
		msgLM := findLM(t, st.peer, "the message on LM", func(ev *linearize.Event) bool {
			return ev.RoomID == link.LMRoomID && ev.Sender == aliceLM && lmBody(ev) == "to be deleted"
		})
		if _, err := alice.RedactEvent(ctx, room, msg); err != nil {
			t.Fatal(err)
		}
		findLM(t, st.peer, "the deletion on LM", func(ev *linearize.Event) bool {
			return ev.Type == "m.room.redaction" && lmContent(ev)["redacts"] == msgLM.EventID
		})
	})
}

// linkedWithBob is a room alice linked as hub with bob of the peer joined.
func linkedWithBob(ctx context.Context, t *testing.T, st *bridgeStack, alice *mautrix.Client, name string) (id.RoomID, *bridgedb.Link) {
	t.Helper()
	room := roomWithBot(ctx, t, st, alice, name)
	if a := botAnswer(ctx, t, st, alice, room, "!lm link"); !strings.Contains(a, "Linked") {
		t.Fatalf("link answer = %q", a)
	}
	link := waitActiveLink(ctx, t, st, room)
	bob := "@bob:" + st.peer.ServerName()
	bobGhost, _ := st.users.GhostOf(bob)
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bobGhost}); err != nil {
		t.Fatal(err)
	}
	waitLMInvite(t, st, link.LMRoomID, bob)
	if _, err := st.peer.Join(ctx, link.LMRoomID, bob, link.HubServer); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "bob's ghost in the room", func() bool {
		members, err := alice.JoinedMembers(ctx, room)
		return err == nil && hasMember(members, bobGhost)
	})
	return room, link
}

// TestSyncAfterDrift: state and members that drifted apart behind the bridge's back are put right by `!lm sync`.
func TestSyncAfterDrift(t *testing.T) {
	tesths.ForEachKind(t, func(t *testing.T, kind tesths.Kind) {
		ctx, st := startIssue14Stack(t, kind)
		alice := st.hs.RegisterUserT(t, "alice", "alice-password", false)
		aliceLM, _ := st.users.LMUserOf(alice.UserID)
		botLM, _ := st.users.LMUserOf(st.bot)
		room, link := linkedWithBob(ctx, t, st, alice, "Sync room")
		bobGhost, _ := st.users.GhostOf("@bob:" + st.peer.ServerName())

		// Drift, made where the bridge does not look: the bot's LM identity renames the LM room (its own events do
		// not cross back), alice's LM identity leaves the LM room, and bob's ghost leaves the Matrix room as itself
		// (the bridge's own users' events do not cross either).
		empty := ""
		if _, err := st.ours.SendEvent(ctx, link.LMRoomID, botLM, "m.room.name", &empty, map[string]any{"name": "drifted"}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.ours.Leave(ctx, link.LMRoomID, aliceLM); err != nil {
			t.Fatal(err)
		}
		ghost, err := st.as.Ghost(bobGhost)
		if err != nil {
			t.Fatal(err)
		}
		if _, err = ghost.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		lastOnLM := func(pred func(*linearize.Event) bool) *linearize.Event {
			evs := st.peer.roomEvents(link.LMRoomID)
			for i := len(evs) - 1; i >= 0; i-- {
				if pred(evs[i]) {
					return evs[i]
				}
			}
			return nil
		}
		isName := func(ev *linearize.Event) bool { return ev.Type == "m.room.name" }
		isAliceMember := func(ev *linearize.Event) bool {
			return ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == aliceLM
		}
		waitUntil(t, 60*time.Second, "the drift to reach the peer", func() bool {
			name, member := lastOnLM(isName), lastOnLM(isAliceMember)
			return name != nil && lmContent(name)["name"] == "drifted" && member != nil && lmContent(member)["membership"] == "leave"
		})
		waitUntil(t, 60*time.Second, "bob's ghost gone from the Matrix room", func() bool {
			members, err := alice.JoinedMembers(ctx, room)
			return err == nil && !hasMember(members, bobGhost)
		})

		a := botAnswer(ctx, t, st, alice, room, "!lm sync")
		if !strings.Contains(a, "Synced") || !strings.Contains(a, "1 Matrix users joined") || !strings.Contains(a, "1 ghosts joined") {
			t.Errorf("sync answer = %q", a)
		}
		waitUntil(t, 60*time.Second, "the name and alice back on LM", func() bool {
			name, member := lastOnLM(isName), lastOnLM(isAliceMember)
			return name != nil && lmContent(name)["name"] == "Sync room" && member != nil && lmContent(member)["membership"] == "join"
		})
		waitUntil(t, 60*time.Second, "bob's ghost back in the Matrix room", func() bool {
			members, err := alice.JoinedMembers(ctx, room)
			return err == nil && hasMember(members, bobGhost)
		})
		// A second sync finds nothing to do.
		if a := botAnswer(ctx, t, st, alice, room, "!lm sync"); !strings.Contains(a, "0 state events re-sent to LM, 0 to Matrix; 0 Matrix users joined and 0 removed on LM; 0 ghosts joined and 0 removed") {
			t.Errorf("second sync answer = %q", a)
		}

		// Where another server is the hub, the LM room's state is the one that stands.
		t.Run("as participant", func(t *testing.T) {
			frank := "@frank:" + st.peer.ServerName()
			frankGhost, _ := st.users.GhostOf(frank)
			lmRoom, err := st.peer.CreateRoom(ctx, frank, []linearize.InitialState{
				{Type: "m.room.join_rules", Content: map[string]any{"join_rule": "public"}},
				{Type: "m.room.topic", Content: map[string]any{"topic": "the LM topic"}}})
			if err != nil {
				t.Fatal(err)
			}
			proom := roomWithBot(ctx, t, st, alice, "participant room")
			if a := botAnswer(ctx, t, st, alice, proom, "!lm link "+lmRoom+" via "+st.peer.ServerName()); !strings.Contains(a, "Linked") {
				t.Fatalf("link answer = %q", a)
			}
			waitUntil(t, 60*time.Second, "frank's ghost in the room", func() bool {
				members, err := alice.JoinedMembers(ctx, proom)
				return err == nil && hasMember(members, frankGhost)
			})
			// Drift on the Matrix side, as the bridge's own users (whose events do not cross): the bot changes the
			// topic, frank's ghost leaves.
			if _, err = st.as.Bot().SendStateEvent(ctx, proom, event.StateTopic, "", map[string]any{"topic": "drifted"}); err != nil {
				t.Fatal(err)
			}
			fg, err := st.as.Ghost(frankGhost)
			if err != nil {
				t.Fatal(err)
			}
			if _, err = fg.LeaveRoom(ctx, proom); err != nil {
				t.Fatal(err)
			}
			topic := func() string {
				var got string
				for _, evt := range roomTimeline(ctx, t, alice, proom) {
					if evt.Type == event.StateTopic {
						got, _ = rawContent(evt)["topic"].(string)
					}
				}
				return got
			}
			waitUntil(t, 60*time.Second, "the drifted topic", func() bool { return topic() == "drifted" })
			a := botAnswer(ctx, t, st, alice, proom, "!lm sync")
			if !strings.Contains(a, "0 state events re-sent to LM, 1 to Matrix") || !strings.Contains(a, "1 ghosts joined") {
				t.Errorf("participant sync answer = %q", a)
			}
			waitUntil(t, 60*time.Second, "the LM topic back", func() bool { return topic() == "the LM topic" })
			waitUntil(t, 60*time.Second, "frank's ghost back", func() bool {
				members, err := alice.JoinedMembers(ctx, proom)
				return err == nil && hasMember(members, frankGhost)
			})
		})
	})
}

// TestBackfillSurvivesRestart runs the real lmbridge binary: a link from an existing LM room brings in the latest 50
// messages (the example config's bridge.backfill_limit); after a SIGKILL and a restart, the live messages that follow
// arrive once and linking again brings in nothing twice, since what was backfilled is in lmbridge's database.
func TestBackfillSurvivesRestart(t *testing.T) {
	tesths.ForEachKind(t, func(t *testing.T, kind tesths.Kind) {
		ctx := testContext(t)
		peer := &lmPeer{}
		peer.Engine = startLMEngine(ctx, t, "peer", sqliteDB, peer, nil)
		b := newLMBridgeHub(t, tesths.DefaultServerName)
		hs := tesths.StartT(t, kind, tesths.Options{ServerName: tesths.DefaultServerName, Registrations: [][]byte{b.RegYAML}})
		b.SetHomeserver(t, hs)
		b.Start(t)
		bot := id.NewUserID(b.Registration.SenderLocalpart, tesths.DefaultServerName)
		alice := hs.RegisterUserT(t, "alice", "alice-password", false)
		frank := "@frank:" + peer.ServerName()
		lmRoom, err := peer.CreateRoom(ctx, frank, []linearize.InitialState{
			{Type: "m.room.join_rules", Content: map[string]any{"join_rule": "public"}}})
		if err != nil {
			t.Fatal(err)
		}
		const sent = 55
		for i := range sent {
			if _, err = peer.SendEvent(ctx, lmRoom, frank, "m.room.message", nil,
				map[string]any{"msgtype": "m.text", "body": "hist-" + strconv.Itoa(i)}, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Invite: []id.UserID{bot},
			PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{alice.UserID: 100, bot: 100}}})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		waitUntil(t, 60*time.Second, "the bot to join", func() bool {
			members, err := alice.JoinedMembers(ctx, room)
			return err == nil && hasMember(members, bot)
		})
		link := "!lm link " + lmRoom + " via " + peer.ServerName()
		if a := answerOf(ctx, t, bot, alice, room, link); !strings.Contains(a, "Linked") {
			t.Fatalf("link answer = %q", a)
		}
		counts := func() map[string]int {
			out := map[string]int{}
			for _, evt := range roomTimeline(ctx, t, alice, room) {
				if body := bodyOf(evt); strings.HasPrefix(body, "hist-") || strings.HasPrefix(body, "live-") {
					out[body]++
				}
			}
			return out
		}
		check := func(what string, live int) {
			t.Helper()
			got := counts()
			for i := range sent {
				want := 0
				if i >= sent-50 {
					want = 1
				}
				if n := got["hist-"+strconv.Itoa(i)]; n != want {
					t.Errorf("%s: hist-%d is in the Matrix room %d times, want %d", what, i, n, want)
				}
			}
			for i := 1; i <= live; i++ {
				if n := got["live-"+strconv.Itoa(i)]; n != 1 {
					t.Errorf("%s: live-%d is in the Matrix room %d times, want 1", what, i, n)
				}
			}
		}
		check("after the link", 0)

		b.Kill(t)
		b.Start(t)
		frankGhost := id.UserID("")
		for _, evt := range roomTimeline(ctx, t, alice, room) {
			if bodyOf(evt) == "hist-54" {
				frankGhost = evt.Sender
			}
		}
		if _, err = peer.SendEvent(ctx, lmRoom, frank, "m.room.message", nil,
			map[string]any{"msgtype": "m.text", "body": "live-1"}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		findDAG(ctx, t, alice, room, "live-1 after the restart", func(evt *event.Event) bool {
			return evt.Sender == frankGhost && bodyOf(evt) == "live-1"
		})
		if a := answerOf(ctx, t, bot, alice, room, "!lm unlink"); !strings.Contains(a, "no longer bridged") {
			t.Fatalf("unlink answer = %q", a)
		}
		if a := answerOf(ctx, t, bot, alice, room, link); !strings.Contains(a, "Linked") {
			t.Fatalf("second link answer = %q", a)
		}
		if _, err = peer.SendEvent(ctx, lmRoom, frank, "m.room.message", nil,
			map[string]any{"msgtype": "m.text", "body": "live-2"}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		findDAG(ctx, t, alice, room, "live-2 after linking again", func(evt *event.Event) bool {
			return evt.Sender == frankGhost && bodyOf(evt) == "live-2"
		})
		check("after a restart and a second link", 2)
	})
}
