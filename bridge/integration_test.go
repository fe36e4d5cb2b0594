package bridge

import (
	"context"
	"encoding/json"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	mautrixfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/linearize"
	"github.com/lmbridge/lmbridge/remote"
)

// lmRecorder is the listener of the other LM server: it keeps what it is told.
type lmRecorder struct {
	lock    sync.Mutex
	events  []*remote.Event
	invites []*remote.Invite
}

func (r *lmRecorder) OnEvent(_ context.Context, evt *remote.Event) error {
	r.lock.Lock()
	defer r.lock.Unlock()
	r.events = append(r.events, evt)
	return nil
}

func (r *lmRecorder) OnInvite(_ context.Context, inv *remote.Invite) error {
	r.lock.Lock()
	defer r.lock.Unlock()
	r.invites = append(r.invites, inv)
	return nil
}

func (r *lmRecorder) OnLPDUFailed(context.Context, string, string, string) {}

func (r *lmRecorder) find(pred func(*remote.Event) bool) *remote.Event {
	r.lock.Lock()
	defer r.lock.Unlock()
	for _, ev := range r.events {
		if pred(ev) {
			return ev
		}
	}
	return nil
}

// startEngine starts a real LM engine on a loopback port, plain HTTP, its server name being its address.
func startEngine(t *testing.T, ctx context.Context, l remote.Listener, name string) *linearize.Engine {
	t.Helper()
	return startEngineBlocking(t, ctx, l, name, nil)
}

// startEngineBlocking is startEngine with lm.ip_range_blocklist set to blocked.
func startEngineBlocking(t *testing.T, ctx context.Context, l remote.Listener, name string, blocked []string) *linearize.Engine {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	db := openRawDB(t)
	eng, err := linearize.New(ctx, config.LM{ServerName: ln.Addr().String(), AllowPlainHTTP: true, AllowHTTPPeers: true,
		IPRangeBlocklist: blocked}, db, linearize.Options{SigningKey: mautrixfed.GenerateSigningKey(), Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	eng.AddListener(name, l)
	if err = eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Stop(context.Background()) })
	return eng
}

// twoServers is the bridge on one LM engine and a second LM server of ours whose users the test drives, over real
// HTTP on loopback; only the homeserver is a recording fake.
type twoServers struct {
	br     *Bridge
	mx     *fakeMatrix
	ours   *linearize.Engine
	remote *linearize.Engine
	rec    *lmRecorder
	bob    string
	ghost  id.UserID
	alice  string
	// fwd is the bridge engine's listener, which forwards to br.
	fwd *forwardListener
}

func newTwoServers(t *testing.T, ctx context.Context) *twoServers {
	t.Helper()
	return newTwoServersBlocking(t, ctx, nil)
}

// newTwoServersBlocking is newTwoServers with the bridge's engine refusing to connect to the blocked ranges.
func newTwoServersBlocking(t *testing.T, ctx context.Context, blocked []string) *twoServers {
	t.Helper()
	ts := &twoServers{mx: newFakeMatrix(), rec: &lmRecorder{}}
	// The bridge's engine must exist before the bridge (which checks its server name) and be started after the
	// bridge is registered as its listener; a forwarding listener breaks the cycle.
	fwd := &forwardListener{}
	ts.fwd = fwd
	ts.ours = startEngineBlocking(t, ctx, fwd, "bridge", blocked)
	ts.remote = startEngine(t, ctx, ts.rec, "test")
	users, err := NewUserMapper(testHS, ts.ours.ServerName(), testBot, "lm_{{.}}")
	if err != nil {
		t.Fatal(err)
	}
	ts.br, err = New(Params{Config: config.Bridge{Permissions: map[string]string{testHS: "user"}}, DB: openRawDB(t),
		Users: users, Matrix: ts.mx, LM: ts.ours})
	if err != nil {
		t.Fatal(err)
	}
	if err = ts.br.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	fwd.set(ts.br)
	ts.bob = "@bob:" + ts.remote.ServerName()
	ts.ghost, _ = users.GhostOf(ts.bob)
	ts.alice, _ = users.LMUserOf(alice)
	return ts
}

type forwardListener struct {
	lock sync.RWMutex
	l    remote.Listener
}

func (f *forwardListener) set(l remote.Listener) {
	f.lock.Lock()
	f.l = l
	f.lock.Unlock()
}

func (f *forwardListener) get() remote.Listener {
	f.lock.RLock()
	defer f.lock.RUnlock()
	return f.l
}

func (f *forwardListener) OnEvent(ctx context.Context, evt *remote.Event) error {
	if l := f.get(); l != nil {
		return l.OnEvent(ctx, evt)
	}
	return context.DeadlineExceeded
}

func (f *forwardListener) OnInvite(ctx context.Context, inv *remote.Invite) error {
	if l := f.get(); l != nil {
		return l.OnInvite(ctx, inv)
	}
	return context.DeadlineExceeded
}

func (f *forwardListener) OnLPDUFailed(ctx context.Context, roomID, lpduID, reason string) {
	if l := f.get(); l != nil {
		l.OnLPDUFailed(ctx, roomID, lpduID, reason)
	}
}

// eventually polls cond for up to 20 s; the engines deliver asynchronously.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (ts *twoServers) ghostCall(op string, pred func(matrixCall) bool) func() bool {
	return func() bool { return slices.ContainsFunc(ts.mx.callsOf(op), pred) }
}

func TestIntegrationLinkedFromMatrix(t *testing.T) {
	ctx := testContext(t)
	ts := newTwoServers(t, ctx)
	tb := &testBridge{Bridge: ts.br, mx: ts.mx}
	tb.seedDAGRoom()
	link, err := ts.br.LinkAsHub(ctx, dagRoom, string(alice))
	if err != nil {
		t.Fatal(err)
	}
	// alice invites bob's ghost in her client: the LM invite goes to bob's server over /invite.
	ghostInvite := mkEvent(dagRoom, "$inv", alice, event.StateMember, sk(string(ts.ghost)), map[string]any{"membership": "invite"})
	if err = ts.br.HandleDAGEvent(ctx, ghostInvite); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob's invite", func() bool {
		ts.rec.lock.Lock()
		defer ts.rec.lock.Unlock()
		return len(ts.rec.invites) == 1 && ts.rec.invites[0].Target == ts.bob
	})
	if _, err = ts.remote.Join(ctx, link.LMRoomID, ts.bob, link.HubServer); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob's ghost joining", ts.ghostCall("member", func(c matrixCall) bool {
		return c.Sender == ts.ghost && c.Membership == event.MembershipJoin
	}))
	// `!lm invite` invites another user of bob's server, now that it is in the room, through the log.
	carolRemote := "@carol:" + ts.remote.ServerName()
	cmd := mkEvent(dagRoom, "$cmdinvite", alice, event.EventMessage, nil, map[string]any{"msgtype": "m.text", "body": "!lm invite " + carolRemote})
	if err = ts.br.HandleDAGEvent(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	eventually(t, "carol's invite on her server", func() bool {
		return ts.rec.find(func(ev *remote.Event) bool {
			return ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == carolRemote && ev.Sender == ts.alice
		}) != nil
	})
	if !slices.ContainsFunc(ts.mx.callsOf("message"), func(c matrixCall) bool {
		body, _ := c.Content["body"].(string)
		return c.Sender == testBot && body == "Invited "+carolRemote+" to the LM room."
	}) {
		t.Errorf("no answer to !lm invite: %+v", ts.mx.callsOf("message"))
	}
	// Matrix → LM: alice's message reaches bob's server, from alice's LM identity.
	hello := mkEvent(dagRoom, "$hello", alice, event.EventMessage, nil, map[string]any{"msgtype": "m.text", "body": "hello bob"})
	if err = ts.br.HandleDAGEvent(ctx, hello); err != nil {
		t.Fatal(err)
	}
	helloLM, _ := ts.br.LMEventOf(ctx, "$hello")
	eventually(t, "alice's message on bob's server", func() bool {
		return ts.rec.find(func(ev *remote.Event) bool { return ev.EventID == helloLM && ev.Sender == ts.alice }) != nil
	})
	// LM → Matrix: bob replies from his server; the ghost posts it with bob's timestamp and the reply rewritten.
	reply, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": "hi alice",
		"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": helloLM}}})
	if _, err = ts.remote.SendEvent(ctx, link.LMRoomID, ts.bob, "m.room.message", nil, json.RawMessage(reply), time.UnixMilli(1_650_000_000_000)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob's reply on Matrix", ts.ghostCall("message", func(c matrixCall) bool {
		return c.Sender == ts.ghost && c.Content["body"] == "hi alice" &&
			relatesTo(c.Content)["m.in_reply_to"].(map[string]any)["event_id"] == "$hello" &&
			c.TS.Equal(time.UnixMilli(1_650_000_000_000))
	}))
	// alice (a creator, 100 on LM) kicks bob on Matrix: bob is kicked on LM, and his server hears it.
	kick := mkEvent(dagRoom, "$kick", alice, event.StateMember, sk(string(ts.ghost)), map[string]any{"membership": "leave", "reason": "bye"})
	if err = ts.br.HandleDAGEvent(ctx, kick); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob's kick on his server", func() bool {
		return ts.rec.find(func(ev *remote.Event) bool {
			return ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == ts.bob && ev.Sender == ts.alice
		}) != nil
	})
}

func TestIntegrationLinkedFromLM(t *testing.T) {
	ctx := testContext(t)
	ts := newTwoServers(t, ctx)
	// bob creates a room on his server and invites alice's LM identity: the bridge makes a portal.
	roomID, err := ts.remote.CreateRoom(ctx, ts.bob, []remote.InitialState{{Type: "m.room.name", Content: map[string]any{"name": "Bob's room"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = ts.remote.InviteUser(ctx, roomID, ts.bob, ts.alice); err != nil {
		t.Fatal(err)
	}
	var portal id.RoomID
	eventually(t, "the portal link", func() bool {
		l, _ := ts.br.DB().GetLinkByLMRoom(ctx, roomID)
		if l != nil {
			portal = l.DAGRoomID
		}
		return l != nil && l.Status == bridgedb.LinkPendingJoin && l.PendingUser == alice
	})
	creates := ts.mx.callsOf("create")
	if len(creates) != 1 || creates[0].Sender != ts.ghost || !slices.Contains(creates[0].Create.Invite, alice) ||
		creates[0].Create.Name != "Bob's room" {
		t.Fatalf("portal creation = %+v", creates)
	}
	// alice joins the portal: the bridge joins the LM room for her through bob's hub.
	join := mkEvent(portal, "$alicejoin", alice, event.StateMember, sk(string(alice)), map[string]any{"membership": "join", "displayname": "Alice"})
	if err = ts.br.HandleDAGEvent(ctx, join); err != nil {
		t.Fatal(err)
	}
	eventually(t, "alice's join on bob's server", func() bool {
		return ts.rec.find(func(ev *remote.Event) bool {
			return ev.Type == "m.room.member" && ev.Sender == ts.alice && ev.StateKey != nil && *ev.StateKey == ts.alice
		}) != nil
	})
	// They talk: alice's message goes as an LPDU to bob's hub; the hub's echo fills in the mapping.
	msg := mkEvent(portal, "$fromalice", alice, event.EventMessage, nil, map[string]any{"msgtype": "m.text", "body": "hi bob"})
	if err = ts.br.HandleDAGEvent(ctx, msg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "alice's message mapped to the hub's event", func() bool {
		m, _ := ts.br.DB().GetEventByDAG(ctx, "$fromalice")
		return m != nil && m.LMEventID != "" && ts.rec.find(func(ev *remote.Event) bool { return ev.EventID == m.LMEventID }) != nil
	})
	content, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": "hello alice"})
	if _, err = ts.remote.SendEvent(ctx, roomID, ts.bob, "m.room.message", nil, json.RawMessage(content), time.Time{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob's message on Matrix", ts.ghostCall("message", func(c matrixCall) bool {
		return c.RoomID == portal && c.Sender == ts.ghost && c.Content["body"] == "hello alice"
	}))
	// bob kicks alice on LM: she is kicked on Matrix too.
	if _, err = ts.remote.Kick(ctx, roomID, ts.bob, ts.alice, "enough"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "alice kicked on Matrix", ts.ghostCall("member", func(c matrixCall) bool {
		return c.RoomID == portal && c.Target == alice && c.Membership == event.MembershipLeave && c.Reason == "enough"
	}))
}
