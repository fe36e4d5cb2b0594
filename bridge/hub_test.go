package bridge

import (
	"context"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/remote"
)

// linkedHub is a bridge with the seeded DAG room linked as hub to a new LM room of the real engine.
func linkedHub(t *testing.T) (*testBridge, *bridgedb.Link, context.Context) {
	t.Helper()
	ctx := testContext(t)
	tb := newTestBridge(t, nil, config.Bridge{})
	tb.seedDAGRoom()
	link, err := tb.LinkAsHub(ctx, dagRoom, string(alice))
	if err != nil {
		t.Fatal(err)
	}
	return tb, link, ctx
}

func TestLinkAsHubProjectsTheRoom(t *testing.T) {
	tb, link, ctx := linkedHub(t)
	if link.Role != bridgedb.RoleHub || link.HubServer != testLM || !strings.HasSuffix(link.LMRoomID, ":"+testLM) {
		t.Fatalf("link = %+v", link)
	}
	pl := tb.lmState(t, link.LMRoomID, "m.room.power_levels", "")
	users := pl["users"].(map[string]any)
	for user, want := range map[string]float64{aliceLM: 100, botLM: 100, carolLM: 50, bobLM: 50} {
		if users[user] != want {
			t.Errorf("LM power level of %s = %v, want %v (users %v)", user, users[user], want, users)
		}
	}
	if jr := tb.lmState(t, link.LMRoomID, "m.room.join_rules", ""); jr["join_rule"] != "invite" || jr["allow"] != nil {
		t.Errorf("join rules = %v, want restricted projected as invite", jr)
	}
	for typ, field := range map[string][2]string{
		"m.room.history_visibility": {"history_visibility", "joined"}, "m.room.name": {"name", "Linked room"},
		"m.room.topic": {"topic", "A topic"}, "m.room.avatar": {"url", "mxc://hs.example/avatar"},
	} {
		if c := tb.lmState(t, link.LMRoomID, typ, ""); c[field[0]] != field[1] {
			t.Errorf("%s = %v", typ, c)
		}
	}
	for _, u := range []string{aliceLM, carolLM} {
		if m := tb.lmState(t, link.LMRoomID, "m.room.member", u); m["membership"] != "join" {
			t.Errorf("member %s = %v", u, m)
		}
	}
	// Neither the bot's Matrix account nor a ghost gets a second identity on LM.
	if m := tb.lmState(t, link.LMRoomID, "m.room.member", "@lmbridge=hs.example:lm.example.org"); m["membership"] != "join" {
		t.Errorf("bot LM identity = %v, want the creator's join", m)
	}
	if m := tb.lmState(t, link.LMRoomID, "m.room.member", "@lm_bob=remote.example=hs.example:lm.example.org"); m != nil {
		t.Errorf("ghost was projected to LM: %v", m)
	}
	marks := tb.mx.callsOf("state")
	if len(marks) != 1 || marks[0].Type != "m.bridge" || marks[0].Content["channel"].(map[string]any)["id"] != link.LMRoomID {
		t.Fatalf("m.bridge calls = %+v", marks)
	}
	if _, err := tb.LinkAsHub(ctx, dagRoom, string(alice)); err == nil {
		t.Fatal("a linked room was linked again")
	}
}

func TestLinkRefusesEncryptedRoom(t *testing.T) {
	ctx := testContext(t)
	tb := newTestBridge(t, nil, config.Bridge{})
	tb.seedDAGRoom()
	tb.mx.setState(mkEvent(dagRoom, "$enc", alice, event.StateEncryption, sk(""), map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}))
	if _, err := tb.LinkAsHub(ctx, dagRoom, string(alice)); err != ErrEncryptedRoom {
		t.Fatalf("LinkAsHub(encrypted) = %v", err)
	}
	if l, _ := tb.DB().GetLinkByDAGRoom(ctx, dagRoom); l != nil {
		t.Fatal("encrypted room was linked")
	}
}

// sendDAG hands an event to the bridge and returns the LM event it became ("" if none).
func sendDAG(t *testing.T, tb *testBridge, ctx context.Context, evt *event.Event) string {
	t.Helper()
	if err := tb.HandleDAGEvent(ctx, evt); err != nil {
		t.Fatalf("HandleDAGEvent(%s): %v", evt.ID, err)
	}
	m, err := tb.DB().GetEventByDAG(ctx, evt.ID)
	if err != nil {
		t.Fatal(err)
	}
	if m == nil {
		return ""
	}
	return m.LMEventID
}

func TestDAGToLMMessages(t *testing.T) {
	tb, link, ctx := linkedHub(t)
	msg := func(evtID id.EventID, sender id.UserID, evtType event.Type, content map[string]any) *event.Event {
		return mkEvent(dagRoom, evtID, sender, evtType, nil, content)
	}
	root := sendDAG(t, tb, ctx, msg("$root", alice, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "hello"}))
	if root == "" {
		t.Fatal("text message did not cross")
	}
	rootEv := tb.lmEvent(t, root)
	if rootEv["sender"] != aliceLM || rootEv["type"] != "m.room.message" || rootEv["origin_server_ts"].(float64) != 1_700_000_000_000 {
		t.Fatalf("LM event = %v", rootEv)
	}
	cases := []struct {
		name  string
		evt   *event.Event
		check func(c Content) bool
	}{
		{"notice", msg("$notice", carol, event.EventMessage, map[string]any{"msgtype": "m.notice", "body": "n"}),
			func(c Content) bool { return c["msgtype"] == "m.notice" }},
		{"emote", msg("$emote", carol, event.EventMessage, map[string]any{"msgtype": "m.emote", "body": "waves"}),
			func(c Content) bool { return c["msgtype"] == "m.emote" }},
		{"formatted with mention", msg("$fmt", carol, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "hi alice",
			"format": "org.matrix.custom.html", "formatted_body": `hi <a href="https://matrix.to/#/@alice:hs.example">alice</a>`,
			"m.mentions": map[string]any{"user_ids": []any{string(alice)}}}),
			func(c Content) bool {
				return strings.Contains(c["formatted_body"].(string), "matrix.to/#/"+aliceLM) &&
					c["m.mentions"].(map[string]any)["user_ids"].([]any)[0] == aliceLM
			}},
		{"media", msg("$img", carol, event.EventMessage, map[string]any{"msgtype": "m.image", "body": "cat.png",
			"url": "mxc://hs.example/cat", "info": map[string]any{"mimetype": "image/png", "size": 1234}}),
			func(c Content) bool {
				return c["url"] == "mxc://hs.example/cat" && c["info"].(map[string]any)["size"] == 1234.0
			}},
		{"reply", msg("$reply", carol, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "> hello\n\nyes",
			"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": "$root"}}}),
			func(c Content) bool { return relatesTo(c)["m.in_reply_to"].(map[string]any)["event_id"] == root }},
		{"edit", msg("$edit", alice, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "* hello!",
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "hello!"},
			"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": "$root"}}),
			func(c Content) bool {
				return relatesTo(c)["event_id"] == root && c["m.new_content"].(map[string]any)["body"] == "hello!"
			}},
		{"reaction", msg("$react", carol, event.EventReaction, map[string]any{
			"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": "$root", "key": "👍"}}),
			func(c Content) bool { return relatesTo(c)["event_id"] == root && relatesTo(c)["key"] == "👍" }},
		{"thread", msg("$thread", carol, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "in thread",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": "$root", "is_falling_back": true,
				"m.in_reply_to": map[string]any{"event_id": "$root"}}}),
			func(c Content) bool {
				r := relatesTo(c)
				return r["event_id"] == root && r["m.in_reply_to"].(map[string]any)["event_id"] == root
			}},
		{"reply to an event that never crossed", msg("$orphan", carol, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "x",
			"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": "$never"}}}),
			func(c Content) bool { return c["m.relates_to"] == nil && c["body"] == "x" }},
	}
	for _, tc := range cases {
		lmID := sendDAG(t, tb, ctx, tc.evt)
		if lmID == "" {
			t.Errorf("%s: did not cross", tc.name)
			continue
		}
		ev := tb.lmEvent(t, lmID)
		if c := ev["content"].(map[string]any); !tc.check(c) {
			t.Errorf("%s: LM content = %v", tc.name, c)
		}
	}
	redaction := mkEvent(dagRoom, "$redact", alice, event.EventRedaction, nil, map[string]any{"reason": "oops"})
	redaction.Redacts = "$edit"
	editLM, _ := tb.LMEventOf(ctx, "$edit")
	lmID := sendDAG(t, tb, ctx, redaction)
	if c := tb.lmEvent(t, lmID)["content"].(map[string]any); c["redacts"] != editLM || c["reason"] != "oops" {
		t.Errorf("redaction content = %v, want redacts %s", c, editLM)
	}
	if len(tb.mx.callsOf("message")) != 0 {
		t.Fatalf("notices sent for events that crossed: %+v", tb.mx.callsOf("message"))
	}
	_ = link
}

func relatesTo(c Content) map[string]any {
	r, _ := c["m.relates_to"].(map[string]any)
	return r
}

func TestDAGEventsThatCannotCross(t *testing.T) {
	tb, link, ctx := linkedHub(t)
	big := strings.Repeat("x", 70_000)
	cases := []struct {
		name, reason string
		evt          *event.Event
	}{
		{"too large", "too large", mkEvent(dagRoom, "$big", carol, event.EventMessage, nil, map[string]any{"msgtype": "m.text", "body": big})},
		{"unsupported type", "not supported", mkEvent(dagRoom, "$poll", carol, event.Type{Type: "org.example.custom"}, nil, map[string]any{"x": 1})},
		{"encrypted", "encrypted", mkEvent(dagRoom, "$enc", carol, event.EventEncrypted, nil, map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"})},
		{"reaction to an event that never crossed", "not bridged", mkEvent(dagRoom, "$r", carol, event.EventReaction, nil,
			map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": "$never", "key": "x"}})},
		// carol has 50, the LM room wants 100 for power levels: the hub's auth rules refuse it.
		{"rejected by the hub's auth rules", "auth rule", mkEvent(dagRoom, "$pl2", carol, event.StatePowerLevels, sk(""),
			map[string]any{"users": map[string]any{string(carol): 100}})},
	}
	for _, tc := range cases {
		tb.mx.reset()
		if lmID := sendDAG(t, tb, ctx, tc.evt); lmID != "" {
			t.Errorf("%s: crossed as %s", tc.name, lmID)
		}
		notices := tb.mx.callsOf("message")
		if len(notices) != 1 {
			t.Errorf("%s: notices = %+v", tc.name, notices)
			continue
		}
		n := notices[0]
		body, _ := n.Content["body"].(string)
		if n.Sender != testBot || !strings.Contains(body, tc.reason) ||
			relatesTo(n.Content)["m.in_reply_to"].(map[string]any)["event_id"] != string(tc.evt.ID) ||
			n.Content["m.mentions"].(map[string]any)["user_ids"].([]any)[0] != string(carol) {
			t.Errorf("%s: notice = %+v", tc.name, n)
		}
		if o, _ := tb.DB().Processed(ctx, bridgedb.OriginDAG, string(tc.evt.ID)); o != bridgedb.OutcomeFailed {
			t.Errorf("%s: outcome = %q", tc.name, o)
		}
	}
	l, _ := tb.DB().GetLinkByDAGRoom(ctx, link.DAGRoomID)
	if !strings.Contains(l.LastError, "auth rule") {
		t.Errorf("last error = %q", l.LastError)
	}
}

func TestEchoesAndDuplicatesDoNotCross(t *testing.T) {
	tb, link, ctx := linkedHub(t)
	before, _ := tb.eng.Events(ctx, link.LMRoomID, 0, 1000)
	for _, sender := range []id.UserID{bobGhost, testBot} {
		evt := mkEvent(dagRoom, id.EventID("$echo-"+string(sender)), sender, event.EventMessage, nil, map[string]any{"msgtype": "m.text", "body": "echo"})
		if lmID := sendDAG(t, tb, ctx, evt); lmID != "" {
			t.Errorf("event of %s crossed", sender)
		}
	}
	evt := mkEvent(dagRoom, "$once", alice, event.EventMessage, nil, map[string]any{"msgtype": "m.text", "body": "once"})
	for range 3 {
		sendDAG(t, tb, ctx, evt)
	}
	after, _ := tb.eng.Events(ctx, link.LMRoomID, 0, 1000)
	if len(after) != len(before)+1 {
		t.Fatalf("LM log grew by %d, want 1", len(after)-len(before))
	}
	// Our own LM users' events coming back through the listener are echoes too.
	tb.mx.reset()
	for _, ev := range after {
		le := &remote.Event{RoomID: link.LMRoomID, EventID: ev.EventID}
		full := tb.lmEvent(t, ev.EventID)
		le.Type, le.Sender = full["type"].(string), full["sender"].(string)
		if sk, ok := full["state_key"].(string); ok {
			le.StateKey = &sk
		}
		if err := tb.OnEvent(ctx, le); err != nil {
			t.Fatal(err)
		}
	}
	if len(tb.mx.calls) != 0 {
		t.Fatalf("echoes reached the homeserver: %+v", tb.mx.calls)
	}
}

// A crash after the engine appended a DAG event but before the bridge stored its mapping makes the homeserver's
// event come again; the engine's send key must keep it from reaching LM twice.
func TestDAGEventRedeliveredAfterCrashCrossesOnce(t *testing.T) {
	tb, link, ctx := linkedHub(t)
	before, _ := tb.eng.Events(ctx, link.LMRoomID, 0, 1000)
	evt := mkEvent(dagRoom, "$crash", alice, event.EventMessage, nil, map[string]any{"msgtype": "m.text", "body": "crash"})
	first := sendDAG(t, tb, ctx, evt)
	if first == "" {
		t.Fatal("the event did not cross")
	}
	// What the crash loses: the mapping row, which is also the bridge's record that the event was handled.
	if _, err := tb.DB().Exec(ctx, "DELETE FROM bridge_event WHERE dag_event_id=$1", evt.ID.String()); err != nil {
		t.Fatal(err)
	}
	if again := sendDAG(t, tb, ctx, evt); again != first {
		t.Fatalf("redelivery mapped to %q, want the first LM event %q", again, first)
	}
	after, _ := tb.eng.Events(ctx, link.LMRoomID, 0, 1000)
	if len(after) != len(before)+1 {
		t.Fatalf("LM log grew by %d, want 1", len(after)-len(before))
	}
}

// lmEvent builds a listener event from a remote LM user.
func lmEv(roomID, eventID, sender, evtType string, stateKey *string, content map[string]any) *remote.Event {
	raw, _ := jsonMarshal(content)
	return &remote.Event{RoomID: roomID, EventID: eventID, Sender: sender, Type: evtType, StateKey: stateKey,
		OriginServerTS: 1_600_000_000_000, Content: raw}
}

func TestLMToDAG(t *testing.T) {
	tb, link, ctx := linkedHub(t)
	room := link.LMRoomID
	sendDAG(t, tb, ctx, mkEvent(dagRoom, "$root", alice, event.EventMessage, nil, map[string]any{"msgtype": "m.text", "body": "hello"}))
	rootLM, _ := tb.LMEventOf(ctx, "$root")
	deliver := func(ev *remote.Event) {
		t.Helper()
		if err := tb.OnEvent(ctx, ev); err != nil {
			t.Fatalf("OnEvent(%s): %v", ev.EventID, err)
		}
	}
	tb.mx.reset()
	deliver(lmEv(room, "$bobjoin", bobLM, "m.room.member", sk(bobLM), map[string]any{"membership": "join", "displayname": "Bob"}))
	profiles, members := tb.mx.callsOf("profile"), tb.mx.callsOf("member")
	if len(profiles) != 1 || profiles[0].Sender != bobGhost || profiles[0].Content["displayname"] != "Bob" {
		t.Fatalf("profile calls = %+v", profiles)
	}
	if len(members) != 1 || members[0].Sender != bobGhost || members[0].Target != bobGhost || members[0].Membership != event.MembershipJoin {
		t.Fatalf("member calls = %+v", members)
	}
	tb.mx.reset()
	deliver(lmEv(room, "$bobmsg", bobLM, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "hi",
		"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": rootLM}},
		"m.mentions":   map[string]any{"user_ids": []any{aliceLM}}}))
	deliver(lmEv(room, "$bobmsg", bobLM, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "hi"}))
	msgs := tb.mx.callsOf("message")
	if len(msgs) != 1 {
		t.Fatalf("messages = %+v (a redelivery must not post twice)", msgs)
	}
	m := msgs[0]
	if m.Sender != bobGhost || m.Key != "$bobmsg" || !m.TS.Equal(time.UnixMilli(1_600_000_000_000)) ||
		relatesTo(m.Content)["m.in_reply_to"].(map[string]any)["event_id"] != "$root" ||
		m.Content["m.mentions"].(map[string]any)["user_ids"].([]any)[0] != string(alice) {
		t.Fatalf("message = %+v", m)
	}
	dagID, _ := tb.DAGEventOf(ctx, "$bobmsg")
	if dagID == "" {
		t.Fatal("LM event not mapped to its DAG event")
	}
	tb.mx.reset()
	deliver(lmEv(room, "$bobreact", bobLM, "m.reaction", nil, map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": rootLM, "key": "🎉"}}))
	deliver(lmEv(room, "$bobredact", bobLM, "m.room.redaction", nil, map[string]any{"redacts": "$bobmsg"}))
	deliver(lmEv(room, "$bobtopic", bobLM, "m.room.topic", sk(""), map[string]any{"topic": "new topic"}))
	if r := tb.mx.callsOf("message"); len(r) != 1 || relatesTo(r[0].Content)["event_id"] != "$root" {
		t.Errorf("reaction = %+v", r)
	}
	if r := tb.mx.callsOf("redact"); len(r) != 1 || r[0].Redacts != dagID || r[0].Sender != bobGhost {
		t.Errorf("redaction = %+v, want target %s", r, dagID)
	}
	if s := tb.mx.callsOf("state"); len(s) != 1 || s[0].Type != "m.room.topic" || s[0].Content["topic"] != "new topic" {
		t.Errorf("topic = %+v", s)
	}
	// A ghost without power in the DAG room: the bot kicks for it, saying who did it.
	tb.mx.reset()
	tb.mx.forbid[bobGhost] = true
	deliver(lmEv(room, "$kick", bobLM, "m.room.member", sk(carolLM), map[string]any{"membership": "leave", "reason": "bye"}))
	if k := tb.mx.callsOf("member"); len(k) != 1 || k[0].Sender != testBot || k[0].Target != carol ||
		k[0].Membership != event.MembershipLeave || !strings.Contains(k[0].Reason, bobLM) {
		t.Errorf("kick = %+v", k)
	}
	// Power levels from LM are laid over the DAG room's: users mapped back, v12 creators left unlisted.
	tb.mx.reset()
	delete(tb.mx.forbid, bobGhost)
	deliver(lmEv(room, "$pl", bobLM, "m.room.power_levels", sk(""), map[string]any{
		"users": map[string]any{aliceLM: 100, bobLM: 75, botLM: 100}, "state_default": 50}))
	s := tb.mx.callsOf("state")
	if len(s) != 1 {
		t.Fatalf("power levels = %+v", s)
	}
	users := s[0].Content["users"].(map[string]any)
	if users[string(bobGhost)] != 75.0 || users[string(carol)] != 50.0 || users[string(testBot)] != 100.0 {
		t.Errorf("mapped users = %v", users)
	}
	if _, listed := users[string(alice)]; listed {
		t.Errorf("v12 creator listed in DAG power levels: %v", users)
	}
	// Too large for the DAG room: the LM sender hears it from the bot's LM identity.
	big := strings.Repeat("y", 70_000)
	deliver(lmEv(room, "$huge", bobLM, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": big}))
	evs, _ := tb.eng.Events(ctx, room, 0, 1000)
	last := tb.lmEvent(t, evs[len(evs)-1].EventID)
	if last["sender"] != botLM || !strings.Contains(last["content"].(map[string]any)["body"].(string), "too large") {
		t.Errorf("LM notice = %v", last)
	}
}

// A homeserver that answers a no-op state change with the existing event's ID must not stall the room.
func TestLMEventAnsweredWithAnExistingDAGEvent(t *testing.T) {
	tb, link, ctx := linkedHub(t)
	sendDAG(t, tb, ctx, mkEvent(dagRoom, "$dag1", alice, event.EventMessage, nil, map[string]any{"msgtype": "m.text", "body": "x"}))
	tb.mx.seq = 0 // the fake now answers $dag1 again, as a homeserver deduplicating an identical state event would
	ev := lmEv(link.LMRoomID, "$lmtopic", bobLM, "m.room.topic", sk(""), map[string]any{"topic": "same"})
	if err := tb.OnEvent(ctx, ev); err != nil {
		t.Fatalf("OnEvent = %v", err)
	}
	if o, _ := tb.DB().Processed(ctx, bridgedb.OriginLM, "$lmtopic"); o != bridgedb.OutcomeBridged {
		t.Fatalf("outcome = %q", o)
	}
	if lmID, _ := tb.LMEventOf(ctx, "$dag1"); lmID == "$lmtopic" {
		t.Fatal("the first mapping was replaced")
	}
}
