package bridge

import (
	"strconv"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/internal/testca"
	"github.com/lmbridge/lmbridge/mimi/provider"
	"github.com/lmbridge/lmbridge/mimi/rooms"
	"github.com/lmbridge/lmbridge/remote"
)

const testMIMI = "mimi.example.org"

// newMIMIBridge is a test bridge with LM (a real engine) and MIMI (a real mimi/rooms provider on loopback, which
// hubs the rooms it creates, so that nothing else is needed).
func newMIMIBridge(t *testing.T) (*testBridge, *rooms.Rooms) {
	t.Helper()
	db := openRawDB(t)
	ctx := testContext(t)
	ca := testca.NewT(t)
	mr, err := rooms.New(ctx, rooms.Config{Provider: provider.Config{Domain: testMIMI, Listen: "127.0.0.1:0", DB: db,
		TLS: &provider.TLSConfig{Certificate: ca.IssueT(t, testMIMI), Roots: ca.Pool}}})
	if err != nil {
		t.Fatal(err)
	}
	users, err := NewUserMapper(testHS, testLM, testBot, "lm_{{.}}")
	if err != nil {
		t.Fatal(err)
	}
	mx := newFakeMatrix()
	eng := newEngine(t, db)
	br, err := New(Params{Config: config.Bridge{CommandPrefix: "!lm", Permissions: map[string]string{testHS: "admin"}},
		DB: db, Users: users, Matrix: mx, LM: eng, MIMI: mr})
	if err != nil {
		t.Fatal(err)
	}
	if err = br.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	mr.SetListener(br.MIMIListener())
	if err = mr.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mr.Close() })
	return &testBridge{Bridge: br, mx: mx, eng: eng, raw: db}, mr
}

// TestMIMILinkCarriesMessagesThroughTheMIMISide: "!lm mimi link" makes a MIMI link (its protocol stored), the DAG
// room's Matrix users become participants under the provider's domain, and a message goes to the MIMI side with its
// final ID recorded at once (no echo awaited), not to LM.
func TestMIMILinkCarriesMessagesThroughTheMIMISide(t *testing.T) {
	tb, mr := newMIMIBridge(t)
	tb.seedDAGRoom()
	ctx := testContext(t)
	if a := command(t, tb, alice, "$m1", "!lm mimi link"); !strings.HasPrefix(a, "Linked this room to the MIMI room mimi://"+testMIMI+"/r/") {
		t.Fatalf("link answer %q", a)
	}
	link, err := tb.DB().GetLinkByDAGRoom(ctx, dagRoom)
	if err != nil || link == nil || link.Protocol != bridgedb.ProtocolMIMI || link.Role != bridgedb.RoleHub || link.HubServer != testMIMI {
		t.Fatalf("link %+v, %v", link, err)
	}
	state, err := mr.RoomState(ctx, remote.RoomID(link.LMRoomID))
	if err != nil {
		t.Fatal(err)
	}
	members := map[string]bool{}
	for _, e := range state {
		members[e.StateKey] = true
	}
	for _, want := range []string{"@alice=hs.example:" + testMIMI, "@carol=hs.example:" + testMIMI, "@lmbridge=hs.example:" + testMIMI} {
		if !members[want] {
			t.Errorf("MIMI room lacks %s: %v", want, members)
		}
	}
	if members[aliceLM] || members["@bob:remote.example"] {
		t.Errorf("MIMI room has LM names or the ghost: %v", members)
	}

	evt := mkEvent(dagRoom, "$hello", alice, event.EventMessage, nil, map[string]any{"msgtype": "m.text", "body": "hello MIMI"})
	if err = tb.HandleDAGEvent(ctx, evt); err != nil {
		t.Fatal(err)
	}
	m, err := tb.DB().GetEventByDAG(ctx, "$hello")
	if err != nil || m == nil || m.LPDUID != "" || !strings.HasPrefix(m.LMEventID, "$01") || len(m.LMEventID) != 65 {
		t.Fatalf("mapping of the message: %+v, %v", m, err)
	}
	if got, err := tb.LMEventOf(ctx, "$hello"); err != nil || got != m.LMEventID {
		t.Fatalf("LMEventOf = %q, %v", got, err)
	}
	if n, err := tb.eng.Events(ctx, link.LMRoomID, 0, 10); err == nil && len(n) != 0 {
		t.Fatalf("the LM engine got %d events for the MIMI room", len(n))
	}

	// !lm status names the MIMI room; a topic change stays on the Matrix side without a notice.
	if a := command(t, tb, alice, "$m2", "!lm status"); !strings.Contains(a, link.LMRoomID) || !strings.Contains(a, "hub "+testMIMI) {
		t.Errorf("status %q", a)
	}
	tb.mx.reset()
	topic := mkEvent(dagRoom, "$topic2", alice, event.StateTopic, sk(""), map[string]any{"topic": "new"})
	if err = tb.HandleDAGEvent(ctx, topic); err != nil {
		t.Fatal(err)
	}
	if calls := tb.mx.callsOf("message"); len(calls) != 0 {
		t.Errorf("a topic change drew notices: %+v", calls)
	}
}

// TestMIMICommandsRefuseBadInput: bad URIs and a bridge without MIMI are answered, and make no link.
func TestMIMICommandsRefuseBadInput(t *testing.T) {
	tb := newTestBridge(t, nil, config.Bridge{CommandPrefix: "!lm", Permissions: map[string]string{testHS: "admin"}})
	tb.seedDAGRoom()
	if a := command(t, tb, alice, "$n1", "!lm mimi link"); !strings.Contains(a, "no MIMI provider") {
		t.Errorf("mimi link without MIMI: %q", a)
	}
	mb, _ := newMIMIBridge(t)
	mb.seedDAGRoom()
	for i, tc := range []struct{ cmd, want string }{
		{"!lm mimi join mimi://x/u/bob", "is not a MIMI room URI"},
		{"!lm mimi join https://x/r/y", "is not a MIMI room URI"},
		{"!lm mimi join mimi://" + testMIMI + "/r/abc", "hosted by this bridge"},
		{"!lm mimi invite mimi://x/u/bob", "not linked to a MIMI room"},
		{"!lm mimi frobnicate", "lmbridge MIMI commands"},
	} {
		if a := command(t, mb, alice, id.EventID("$bad"+strconv.Itoa(i)), tc.cmd); !strings.Contains(a, tc.want) {
			t.Errorf("%s: %q, want %q", tc.cmd, a, tc.want)
		}
	}
	if l, _ := mb.DB().GetLinkByDAGRoom(testContext(t), dagRoom); l != nil {
		t.Fatalf("refused commands made a link: %+v", l)
	}
}
