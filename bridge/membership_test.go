package bridge

import (
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/remote"
)

func TestDAGMembershipToLM(t *testing.T) {
	tb, link, ctx := linkedHub(t)
	const dave = id.UserID("@dave:hs.example")
	const daveLM = "@dave=hs.example:lm.example.org"
	member := func(evtID id.EventID, sender, target id.UserID, content map[string]any, prev map[string]any) {
		t.Helper()
		evt := mkEvent(dagRoom, evtID, sender, event.StateMember, sk(string(target)), content)
		if prev != nil {
			evt.Unsigned.PrevContent = &event.Content{}
			_ = evt.Unsigned.PrevContent.UnmarshalJSON(mustJSON(prev))
		}
		if err := tb.HandleDAGEvent(ctx, evt); err != nil {
			t.Fatalf("%s: %v", evtID, err)
		}
		if n := tb.mx.callsOf("message"); len(n) != 0 {
			t.Fatalf("%s: notice %v", evtID, n[0].Content["body"])
		}
	}
	lmMember := func(user string) Content { return tb.lmState(t, link.LMRoomID, "m.room.member", user) }
	// The LM room is invite-only (restricted projected as invite): the bot's LM identity invites dave first.
	member("$davejoin", dave, dave, map[string]any{"membership": "join", "displayname": "Dave"}, nil)
	if m := lmMember(daveLM); m["membership"] != "join" || m["displayname"] != "Dave" {
		t.Fatalf("dave on LM = %v", m)
	}
	member("$davename", dave, dave, map[string]any{"membership": "join", "displayname": "David"}, map[string]any{"membership": "join"})
	if m := lmMember(daveLM); m["displayname"] != "David" {
		t.Fatalf("dave's new name on LM = %v", m)
	}
	member("$daveban", alice, dave, map[string]any{"membership": "ban", "reason": "spam"}, map[string]any{"membership": "join"})
	if m := lmMember(daveLM); m["membership"] != "ban" || m["reason"] != "spam" {
		t.Fatalf("ban on LM = %v", m)
	}
	member("$daveunban", alice, dave, map[string]any{"membership": "leave"}, map[string]any{"membership": "ban"})
	if m := lmMember(daveLM); m["membership"] != "leave" {
		t.Fatalf("unban on LM = %v", m)
	}
	member("$carolleave", carol, carol, map[string]any{"membership": "leave"}, map[string]any{"membership": "join"})
	if m := lmMember(carolLM); m["membership"] != "leave" {
		t.Fatalf("carol's leave on LM = %v", m)
	}
	member("$carolinvite", alice, carol, map[string]any{"membership": "invite"}, map[string]any{"membership": "leave"})
	if m := lmMember(carolLM); m["membership"] != "invite" {
		t.Fatalf("carol's invite on LM = %v", m)
	}
	// Knocking: the DAG room turns to knock, and a knock of erin's on Matrix is a knock on LM.
	const erin = id.UserID("@erin:hs.example")
	if err := tb.HandleDAGEvent(ctx, mkEvent(dagRoom, "$knockrule", alice, event.StateJoinRules, sk(""), map[string]any{"join_rule": "knock"})); err != nil {
		t.Fatal(err)
	}
	if jr := tb.lmState(t, link.LMRoomID, "m.room.join_rules", ""); jr["join_rule"] != "knock" {
		t.Fatalf("join rules on LM = %v", jr)
	}
	member("$erinknock", erin, erin, map[string]any{"membership": "knock", "reason": "let me in"}, nil)
	if m := lmMember("@erin=hs.example:lm.example.org"); m["membership"] != "knock" || m["reason"] != "let me in" {
		t.Fatalf("erin's knock on LM = %v", m)
	}
	// The bot's own membership stays on the Matrix side.
	member("$botleave", alice, testBot, map[string]any{"membership": "leave"}, nil)
	if m := lmMember(botLM); m["membership"] != "join" {
		t.Fatalf("bot's LM identity = %v", m)
	}
}

func TestLMKnockAndBanReachMatrix(t *testing.T) {
	tb, link, ctx := linkedHub(t)
	deliver := func(ev *remote.Event) {
		t.Helper()
		if err := tb.OnEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	deliver(lmEv(link.LMRoomID, "$knock", bobLM, "m.room.member", sk(bobLM), map[string]any{"membership": "knock", "reason": "hi"}))
	if c := tb.mx.callsOf("member"); len(c) != 1 || c[0].Sender != bobGhost || c[0].Membership != event.MembershipKnock || c[0].Reason != "hi" {
		t.Fatalf("knock = %+v", c)
	}
	tb.mx.reset()
	deliver(lmEv(link.LMRoomID, "$ban", bobLM, "m.room.member", sk(carolLM), map[string]any{"membership": "ban"}))
	if c := tb.mx.callsOf("member"); len(c) != 1 || c[0].Sender != bobGhost || c[0].Target != carol || c[0].Membership != event.MembershipBan {
		t.Fatalf("ban = %+v", c)
	}
	// The DAG room now has carol banned: a leave for her from LM is an unban.
	tb.mx.setState(mkEvent(dagRoom, "$carolbanned", bobGhost, event.StateMember, sk(string(carol)), map[string]any{"membership": "ban"}))
	tb.mx.reset()
	deliver(lmEv(link.LMRoomID, "$unban", bobLM, "m.room.member", sk(carolLM), map[string]any{"membership": "leave"}))
	if c := tb.mx.callsOf("member"); len(c) != 1 || c[0].Target != carol || c[0].Membership != MembershipUnban {
		t.Fatalf("unban = %+v", c)
	}
}

func TestHubRefusalOfLPDUTellsTheSender(t *testing.T) {
	ctx := testContext(t)
	tb := newTestBridge(t, nil, config.Bridge{})
	if err := tb.DB().InsertLPDU(ctx, dagRoom, "$sent", "!lm:remote.example", "$lpdu", string(carol), time.Now()); err != nil {
		t.Fatal(err)
	}
	tb.OnLPDUFailed(ctx, "!lm:remote.example", "$lpdu", "auth rule 10.b rejected the event: sender lacks power")
	n := tb.mx.callsOf("message")
	if len(n) != 1 || n[0].RoomID != dagRoom || !strings.Contains(n[0].Content["body"].(string), "10.b") ||
		relatesTo(n[0].Content)["m.in_reply_to"].(map[string]any)["event_id"] != "$sent" {
		t.Fatalf("notice = %+v", n)
	}
	// A refusal for an LPDU we do not know is logged, not sent anywhere.
	tb.mx.reset()
	tb.OnLPDUFailed(ctx, "!lm:remote.example", "$unknown", "whatever")
	if len(tb.mx.calls) != 0 {
		t.Fatalf("unknown LPDU produced %+v", tb.mx.calls)
	}
}

func TestTranslateState(t *testing.T) {
	users, _ := NewUserMapper(testHS, testLM, testBot, "lm_{{.}}")
	tr := &translator{users: users, ids: noIDs{}}
	ctx := testContext(t)
	for _, tc := range []struct {
		dir        direction
		rule, want string
	}{
		{toLM, "restricted", "invite"}, {toLM, "knock_restricted", "invite"}, {toLM, "public", "public"},
		{toLM, "knock", "knock"}, {toLM, "invite", "invite"}, {toDAG, "public", "public"}, {toDAG, "knock", "knock"},
	} {
		c, err := tr.translateState(ctx, tc.dir, "m.room.join_rules", Content{"join_rule": tc.rule, "allow": []any{}}, nil, nil)
		if err != nil || c["join_rule"] != tc.want {
			t.Errorf("join rule %s (dir %d) = %v, %v; want %s", tc.rule, tc.dir, c, err, tc.want)
		}
	}
	creators := []id.UserID{alice}
	c, err := tr.translateState(ctx, toLM, "m.room.power_levels", Content{"users": map[string]any{
		string(carol): 50.0, string(bobGhost): 20.0, "not a user": 99.0}, "ban": 50.0}, creators, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{carolLM: 50.0, bobLM: 20.0, aliceLM: 100}
	if u := c["users"].(map[string]any); len(u) != len(want) || u[carolLM] != 50.0 || u[bobLM] != 20.0 || u[aliceLM] != 100 || c["ban"] != 50.0 {
		t.Errorf("PL to LM = %v", c)
	}
	c, err = tr.translateState(ctx, toDAG, "m.room.power_levels", Content{"users": map[string]any{aliceLM: 100.0, bobLM: 60.0, botLM: 100.0}, "kick": 75.0},
		creators, Content{"users": map[string]any{string(carol): 50.0, string(testBot): 50.0}, "kick": 50.0, "notifications": map[string]any{"room": 50.0}})
	if err != nil {
		t.Fatal(err)
	}
	u := c["users"].(map[string]any)
	if _, listed := u[string(alice)]; listed || u[string(bobGhost)] != 60.0 || u[string(carol)] != 50.0 || u[string(testBot)] != 50.0 ||
		c["kick"] != 75.0 || c["notifications"] == nil {
		t.Errorf("PL to DAG = %v", c)
	}
	for evtType, want := range map[string]error{"m.room.message": nil, "m.room.encrypted": ErrEncrypted,
		"org.example.thing": ErrUnsupportedType, "m.call.invite": errSkip} {
		if err := classify(evtType, false); (err == nil) != (want == nil) || (want != nil && !strings.Contains(err.Error(), want.Error())) {
			t.Errorf("classify(%s) = %v, want %v", evtType, err, want)
		}
	}
	for evtType, want := range map[string]error{"m.room.name": nil, "m.room.member": nil, "m.room.encryption": ErrEncrypted,
		"m.room.canonical_alias": errSkip, "org.example.state": ErrUnsupportedType} {
		if err := classify(evtType, true); (err == nil) != (want == nil) || (want != nil && !strings.Contains(err.Error(), want.Error())) {
			t.Errorf("classify state %s = %v, want %v", evtType, err, want)
		}
	}
}
