package bridge

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/linearize"
)

// setPowerLevels replaces the power levels of the seeded room, as a new power-level event in dagview would.
func (tb *testBridge) setPowerLevels(content map[string]any) {
	tb.mx.setState(mkEvent(dagRoom, "$pl-"+id.EventID(mustJSON(content)), alice, event.StatePowerLevels, sk(""), content))
}

// lmRooms counts the LM rooms the engine holds.
func (tb *testBridge) lmRooms(t *testing.T) int {
	t.Helper()
	var n int
	if err := tb.raw.QueryRow(context.Background(), "SELECT COUNT(*) FROM lm_room").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLinkRefusedWithoutBotPower: `!lm link` in a room where the bot has power level 0 is refused before anything is
// made, and the answer says which level the bot needs and for what; the same room links once the bot has it.
func TestLinkRefusedWithoutBotPower(t *testing.T) {
	ctx := testContext(t)
	tb := newTestBridge(t, nil, config.Bridge{CommandPrefix: "!lm", Permissions: map[string]string{"hs.example": "user"}})
	tb.seedDAGRoom()
	// The levels a homeserver gives a new room, with the bot at 0.
	tb.setPowerLevels(map[string]any{"users": map[string]any{string(carol): 50}, "state_default": 50, "ban": 50,
		"kick": 50, "redact": 50, "invite": 0, "events": map[string]any{"m.room.power_levels": 100}})
	a := command(t, tb, carol, "$link1", "!lm link")
	for _, want := range []string{"Could not link", string(testBot) + " has power level 0", "needs 50",
		"set the room's m.bridge state (50)", "kicks (50)", "bans (50)", "redactions (50)",
		"Give " + string(testBot) + " power level 50"} {
		if !strings.Contains(a, want) {
			t.Errorf("answer %q does not say %q", a, want)
		}
	}
	if strings.Contains(a, "invite the ghosts") {
		t.Errorf("answer %q names invites, which need 0", a)
	}
	if l, _ := tb.DB().GetLinkByDAGRoom(ctx, dagRoom); l != nil {
		t.Fatalf("refused link left %+v", l)
	}
	if n := tb.lmRooms(t); n != 0 {
		t.Fatalf("refused link created %d LM rooms", n)
	}
	if calls := tb.mx.callsOf("state"); len(calls) != 0 {
		t.Errorf("refused link set state: %+v", calls)
	}
	// One need above the others: the answer names only what is missing, and the level that covers it.
	tb.setPowerLevels(map[string]any{"users": map[string]any{string(carol): 50, string(testBot): 50}, "state_default": 50,
		"ban": 100, "events": map[string]any{"m.room.power_levels": 100}})
	a = command(t, tb, carol, "$link2", "!lm link")
	if !strings.Contains(a, "has power level 50") || !strings.Contains(a, "bans (100)") || strings.Contains(a, "m.bridge") ||
		!strings.Contains(a, "power level 100") {
		t.Errorf("answer with ban at 100 = %q", a)
	}
	tb.setPowerLevels(map[string]any{"users": map[string]any{string(carol): 50, string(testBot): 50}, "state_default": 50,
		"events": map[string]any{"m.room.power_levels": 100}})
	a = command(t, tb, carol, "$link3", "!lm link")
	l, _ := tb.DB().GetLinkByDAGRoom(ctx, dagRoom)
	if l == nil || !strings.Contains(a, l.LMRoomID) {
		t.Fatalf("link with the bot at 50 = %q, link %v", a, l)
	}
	var marked bool
	for _, c := range tb.mx.callsOf("state") {
		marked = marked || (c.Type == bridgeStateType.Type && c.Sender == testBot && c.Content["channel"] != nil)
	}
	if !marked {
		t.Errorf("the link set no m.bridge state: %+v", tb.mx.callsOf("state"))
	}
}

// TestLinkToLMRefusedWithoutBotPower: linking to an existing LM room is refused the same way, before the join reaches
// the hub.
func TestLinkToLMRefusedWithoutBotPower(t *testing.T) {
	ctx := testContext(t)
	ts := newTwoServers(t, ctx)
	tb := &testBridge{Bridge: ts.br, mx: ts.mx}
	tb.seedDAGRoom()
	tb.setPowerLevels(map[string]any{"users": map[string]any{string(carol): 50}})
	roomID, err := ts.remote.CreateRoom(ctx, ts.bob, []linearize.InitialState{{Type: "m.room.join_rules", Content: map[string]any{"join_rule": "public"}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ts.br.LinkToLM(ctx, dagRoom, roomID, ts.remote.ServerName(), alice)
	if !errors.Is(err, ErrBotLacksPower) {
		t.Fatalf("LinkToLM with the bot at 0 = %v, want ErrBotLacksPower", err)
	}
	state, err := ts.remote.CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range state {
		if e.Type == "m.room.member" && e.StateKey == ts.alice {
			t.Fatalf("the refused link joined alice on the hub")
		}
	}
}

// TestProvisioningBotPower: the provisioning API answers a room where the bot lacks power with 403 M_FORBIDDEN and
// what the bot needs.
func TestProvisioningBotPower(t *testing.T) {
	tb := newTestBridge(t, nil, config.Bridge{Provisioning: config.Provisioning{SharedSecret: "s3cret"}})
	tb.seedDAGRoom()
	tb.setPowerLevels(map[string]any{"users": map[string]any{string(carol): 50}})
	code, body := provRequest(t, tb.ProvisioningHandler(), http.MethodPost, ProvisioningPrefix+"/links", "Bearer s3cret",
		`{"dag_room_id": "!dag:hs.example"}`)
	msg, _ := body["error"].(string)
	if code != http.StatusForbidden || body["errcode"] != "M_FORBIDDEN" || !strings.Contains(msg, "power level 50") {
		t.Errorf("link with the bot at 0 = %d %v", code, body)
	}
	if n := tb.lmRooms(t); n != 0 {
		t.Fatalf("refused link created %d LM rooms", n)
	}
}
