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

func TestPermissionOf(t *testing.T) {
	tb := newTestBridge(t, nil, config.Bridge{Permissions: map[string]string{
		"*": "relay", "hs.example": "user", "@admin:hs.example": "admin", "@banned:hs.example": "none",
	}})
	for user, want := range map[id.UserID]PermissionLevel{
		"@admin:hs.example":  PermissionAdmin,
		"@alice:hs.example":  PermissionUser,
		"@banned:hs.example": PermissionNone, // the user entry beats the server entry
		"@eve:other.example": PermissionRelay,
	} {
		if got := tb.PermissionOf(user); got != want {
			t.Errorf("PermissionOf(%s) = %v, want %v", user, got, want)
		}
	}
}

// command sends a command as sender and returns the bot's answer.
func command(t *testing.T, tb *testBridge, sender id.UserID, evtID id.EventID, body string) string {
	t.Helper()
	tb.mx.reset()
	evt := mkEvent(dagRoom, evtID, sender, event.EventMessage, nil, map[string]any{"msgtype": "m.text", "body": body})
	if err := tb.HandleDAGEvent(testContext(t), evt); err != nil {
		t.Fatal(err)
	}
	var answers []string
	for _, c := range tb.mx.callsOf("message") {
		if c.Sender == testBot {
			answers = append(answers, c.Content["body"].(string))
		}
	}
	if len(answers) != 1 {
		t.Fatalf("%q answered %d times: %v", body, len(answers), answers)
	}
	return answers[0]
}

func TestCommands(t *testing.T) {
	ctx := testContext(t)
	tb := newTestBridge(t, nil, config.Bridge{CommandPrefix: "!lm", Permissions: map[string]string{
		"*": "relay", "hs.example": "user", "@admin:hs.example": "admin"}})
	tb.seedDAGRoom()
	if a := command(t, tb, "@eve:other.example", "$c1", "!lm help"); !strings.Contains(a, "!lm link <LM room ID> via <hub server>") {
		t.Errorf("help = %q", a)
	}
	if a := command(t, tb, "@eve:other.example", "$c2", "!lm link"); !strings.Contains(a, "may not use") {
		t.Errorf("link by a relay user = %q", a)
	}
	// carol is a user of the homeserver but has 50, and state needs 50 here: allowed. dave has 0: refused.
	if a := command(t, tb, "@dave:hs.example", "$c3", "!lm link"); !strings.Contains(a, "power level 50") {
		t.Errorf("link without power = %q", a)
	}
	if l, _ := tb.DB().GetLinkByDAGRoom(ctx, dagRoom); l != nil {
		t.Fatal("refused command linked the room")
	}
	if a := command(t, tb, carol, "$c4", "!lm status"); !strings.Contains(a, "not linked") {
		t.Errorf("status before link = %q", a)
	}
	a := command(t, tb, carol, "$c5", "!lm link")
	l, _ := tb.DB().GetLinkByDAGRoom(ctx, dagRoom)
	if l == nil || !strings.Contains(a, l.LMRoomID) {
		t.Fatalf("link answer = %q, link %v", a, l)
	}
	if a := command(t, tb, carol, "$c6", "!lm link"); !strings.Contains(a, "already linked") {
		t.Errorf("second link = %q", a)
	}
	if a := command(t, tb, carol, "$c7", "!lm status"); !strings.Contains(a, l.LMRoomID) || !strings.Contains(a, carolLM) ||
		!strings.Contains(a, string(alice)) || !strings.Contains(a, "Last error: none") ||
		!strings.Contains(a, "Delivery: no other LM server in the room") {
		t.Errorf("status = %q", a)
	}
	if a := command(t, tb, carol, "$c8", "!lm link !x:remote.example"); !strings.Contains(a, "Usage") {
		t.Errorf("bad link syntax = %q", a)
	}
	if a := command(t, tb, carol, "$c9", "!lm frobnicate"); !strings.Contains(a, "Unknown command") {
		t.Errorf("unknown command = %q", a)
	}
	// An admin needs no power in the room.
	if a := command(t, tb, "@admin:hs.example", "$c10", "!lm unlink"); !strings.Contains(a, "no longer bridged") {
		t.Errorf("unlink = %q", a)
	}
	if l, _ := tb.DB().GetLinkByDAGRoom(ctx, dagRoom); l != nil {
		t.Fatal("unlink left the link")
	}
	// Something that only starts like the prefix is a message, not a command.
	tb.mx.reset()
	if err := tb.HandleDAGEvent(ctx, mkEvent(dagRoom, "$c11", carol, event.EventMessage, nil, map[string]any{"msgtype": "m.text", "body": "!lmx"})); err != nil {
		t.Fatal(err)
	}
	if n := len(tb.mx.callsOf("message")); n != 0 {
		t.Errorf("!lmx was answered")
	}
}

func TestDescribeDeliveries(t *testing.T) {
	next := time.Date(2026, 11, 22, 1, 2, 3, 0, time.UTC)
	got := describeDeliveries([]remote.Delivery{
		{Server: "a.example"},
		{Server: "b.example", Queued: 2},
		{Server: "c.example", Queued: 5, RetryCount: 3, NextAttempt: next, LastError: "connection refused"},
	})
	want := "a.example up to date; b.example 2 queued; " +
		"c.example 5 queued, 3 failed attempts, next at 2026-11-22T01:02:03Z: connection refused"
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

// TestPermissionTalk checks the level's new name and that the old one means the same.
func TestPermissionTalk(t *testing.T) {
	if parsePermissionLevel("talk") != PermissionTalk || parsePermissionLevel("relay") != PermissionTalk ||
		PermissionTalk.String() != "talk" {
		t.Errorf("talk = %v, relay = %v", parsePermissionLevel("talk"), parsePermissionLevel("relay"))
	}
}
