package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/database"
	"github.com/lmbridge/lmbridge/internal/testca"
	"github.com/lmbridge/lmbridge/internal/testpg"
	"github.com/lmbridge/lmbridge/mimi/provider"
	"github.com/lmbridge/lmbridge/remote"
)

// listener records what a side hears.
type listener struct {
	mu      sync.Mutex
	events  []*remote.Event
	invites []*remote.Invite
}

func (l *listener) OnEvent(_ context.Context, ev *remote.Event) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, ev)
	return nil
}

func (l *listener) OnInvite(_ context.Context, inv *remote.Invite) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.invites = append(l.invites, inv)
	return nil
}

func (l *listener) OnLPDUFailed(context.Context, string, string, string) {}

func (l *listener) find(pred func(*remote.Event) bool) *remote.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range l.events {
		if pred(ev) {
			return ev
		}
	}
	return nil
}

func (l *listener) count(pred func(*remote.Event) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, ev := range l.events {
		if pred(ev) {
			n++
		}
	}
	return n
}

type side struct {
	r   *Rooms
	l   *listener
	ctx context.Context
}

// testNet resolves provider domains to their loopback ports.
type testNet struct {
	mu    sync.Mutex
	ports map[string]string
	ca    *testca.CA
	// postgres puts each side in a database of its own on the shared PostgreSQL server instead of SQLite.
	postgres bool
	// media is each side's homeserver media repository (none without an entry).
	media map[string]Media
}

func (n *testNet) start(t testing.TB, domain string) *side {
	t.Helper()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	ctx := log.WithContext(context.Background())
	dbc := config.Database{Type: "sqlite3-fk-wal",
		URI: "file:" + filepath.Join(t.TempDir(), domain+".db") + "?_txlock=immediate", MaxOpenConns: 1, MaxIdleConns: 2}
	if n.postgres {
		dbc = config.Database{Type: "postgres", URI: testpg.NewDatabaseT(t), MaxOpenConns: 4, MaxIdleConns: 2}
	}
	db, err := database.Open(ctx, dbc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	pc := provider.Config{Domain: domain, Listen: "127.0.0.1:0", DB: db.Database,
		TLS: &provider.TLSConfig{Certificate: n.ca.IssueT(t, domain), Roots: n.ca.Pool},
		Locate: func(d string) string {
			n.mu.Lock()
			defer n.mu.Unlock()
			return "https://" + d + ":" + n.ports[d]
		},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			var d net.Dialer
			return d.DialContext(ctx, network, "127.0.0.1:"+port)
		},
		RetryMin: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	r, err := New(ctx, Config{Provider: pc, Media: n.media[domain], IsLocalUser: func(u remote.UserID) bool { return strings.HasSuffix(string(u), ":"+domain) }})
	if err != nil {
		t.Fatal(err)
	}
	s := &side{r: r, l: &listener{}, ctx: ctx}
	r.SetListener(s.l)
	if err = r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	_, port, _ := net.SplitHostPort(r.Provider().Addr())
	n.mu.Lock()
	n.ports[domain] = port
	n.mu.Unlock()
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func contentOf(ev *remote.Event) map[string]any {
	var c map[string]any
	_ = json.Unmarshal(ev.Content, &c)
	return c
}

// TestTwoProvidersTalkThroughTheSeam drives two MIMI sides as the bridge would: a room hubbed by A, a user of B added
// (registered on B on first use) and told as an invite, then text, a formatted reply, a reaction, an edit and a
// delete each way, with relations pointing at the seam IDs the sends returned, and a keyed send that goes out once.
func TestTwoProvidersTalkThroughTheSeam(t *testing.T) {
	testTwoProviders(t, false)
}

// TestTwoProvidersTalkThroughTheSeamOnPostgres is the same with both sides' tables on PostgreSQL.
func TestTwoProvidersTalkThroughTheSeamOnPostgres(t *testing.T) {
	testTwoProviders(t, true)
}

func testTwoProviders(t *testing.T, postgres bool) {
	n := &testNet{ports: map[string]string{}, ca: testca.NewT(t), postgres: postgres}
	a, b := n.start(t, "mimi-a.test"), n.start(t, "mimi-b.test")
	ctx := a.ctx
	alice, bob := remote.UserID("@alice=hs-a:mimi-a.test"), remote.UserID("@bob=hs-b:mimi-b.test")

	room, err := a.r.NewRoom(ctx, alice, []remote.InitialState{{Type: "m.room.name", Content: map[string]any{"name": "Plans"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = a.r.InviteToRoom(ctx, &remote.MembershipRequest{Room: room, Sender: alice, Target: bob}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's invite on B", func() bool {
		b.l.mu.Lock()
		defer b.l.mu.Unlock()
		return len(b.l.invites) == 1
	})
	inv := b.l.invites[0]
	if inv.RoomID != string(room) || inv.Target != string(bob) || inv.Sender != string(alice) || inv.HubServer != "mimi-a.test" {
		t.Fatalf("invite %+v", inv)
	}
	waitFor(t, "bob's join on A", func() bool {
		return a.l.find(func(ev *remote.Event) bool {
			return ev.Type == "m.room.member" && *ev.StateKey == string(bob) && contentOf(ev)["membership"] == "join"
		}) != nil
	})
	// The bridge joins the portal's user through JoinRoom: bob is in already.
	if _, err = b.r.JoinRoom(ctx, &remote.MembershipRequest{Room: room, Sender: bob, Via: "mimi-a.test"}); err != nil {
		t.Fatalf("JoinRoom for a user in the room: %v", err)
	}

	send := func(s *side, sender remote.UserID, typ string, c map[string]any, key string) remote.EventID {
		t.Helper()
		evID, err := s.r.SendRoomEvent(ctx, &remote.SendRequest{Room: room, Sender: sender, Type: typ, Content: c, Key: key})
		if err != nil {
			t.Fatalf("sending %s: %v", typ, err)
		}
		return evID
	}
	arrived := func(s *side, evID remote.EventID) *remote.Event {
		t.Helper()
		var got *remote.Event
		waitFor(t, "event "+string(evID), func() bool {
			got = s.l.find(func(ev *remote.Event) bool { return ev.EventID == string(evID) })
			return got != nil
		})
		return got
	}

	hello := send(a, alice, "m.room.message", map[string]any{"msgtype": "m.text", "body": "hello bob"}, "k1")
	if again := send(a, alice, "m.room.message", map[string]any{"msgtype": "m.text", "body": "hello bob"}, "k1"); again != hello {
		t.Fatalf("keyed send again = %s, want %s", again, hello)
	}
	ev := arrived(b, hello)
	if c := contentOf(ev); c["body"] != "hello bob" || ev.Sender != string(alice) {
		t.Fatalf("hello on B: %s from %s", ev.Content, ev.Sender)
	}

	reply := send(b, bob, "m.room.message", map[string]any{"msgtype": "m.text", "body": "> hello bob\n\n**yes**",
		"format": "org.matrix.custom.html", "formatted_body": "<strong>yes</strong> <a href=\"https://matrix.to/#/@alice=hs-a:mimi-a.test\">alice</a>",
		"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": string(hello)}},
		"m.mentions":   map[string]any{"user_ids": []any{string(alice)}}}, "k2")
	ev = arrived(a, reply)
	c := contentOf(ev)
	rel, _ := c["m.relates_to"].(map[string]any)
	irt, _ := rel["m.in_reply_to"].(map[string]any)
	if irt["event_id"] != string(hello) || !strings.Contains(c["formatted_body"].(string), "<strong>yes</strong>") {
		t.Fatalf("reply on A: %s", ev.Content)
	}
	mentions, _ := c["m.mentions"].(map[string]any)
	if ids, _ := mentions["user_ids"].([]any); !slices.Contains(ids, any(string(alice))) {
		t.Fatalf("reply on A lost the mention: %s", ev.Content)
	}

	react := send(a, alice, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation",
		"event_id": string(reply), "key": "👍"}}, "k3")
	ev = arrived(b, react)
	rel, _ = contentOf(ev)["m.relates_to"].(map[string]any)
	if ev.Type != "m.reaction" || rel["event_id"] != string(reply) || rel["key"] != "👍" {
		t.Fatalf("reaction on B: %s %s", ev.Type, ev.Content)
	}

	edit := send(b, bob, "m.room.message", map[string]any{"msgtype": "m.text", "body": "* yes!",
		"m.new_content": map[string]any{"msgtype": "m.text", "body": "yes!"},
		"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": string(reply)}}, "k4")
	ev = arrived(a, edit)
	c = contentOf(ev)
	rel, _ = c["m.relates_to"].(map[string]any)
	nc, _ := c["m.new_content"].(map[string]any)
	if rel["rel_type"] != "m.replace" || rel["event_id"] != string(reply) || nc["body"] != "yes!" {
		t.Fatalf("edit on A: %s", ev.Content)
	}

	del := send(a, alice, "m.room.redaction", map[string]any{"redacts": string(hello)}, "k5")
	ev = arrived(b, del)
	if ev.Type != "m.room.redaction" || contentOf(ev)["redacts"] != string(hello) {
		t.Fatalf("delete on B: %s %s", ev.Type, ev.Content)
	}
	if n := b.l.count(func(ev *remote.Event) bool { return ev.EventID == string(hello) }); n != 1 {
		t.Fatalf("hello arrived %d times", n)
	}

	// State other than membership does not cross, with the seam's error.
	key := ""
	if _, err = a.r.SendRoomEvent(ctx, &remote.SendRequest{Room: room, Sender: alice, Type: "m.room.topic", StateKey: &key,
		Content: map[string]any{"topic": "x"}}); !errors.Is(err, remote.ErrUnsupported) {
		t.Fatalf("topic change: %v, want ErrUnsupported", err)
	}

	// Bob leaves: A hears it as his leave.
	if _, err = b.r.LeaveRoom(ctx, &remote.MembershipRequest{Room: room, Sender: bob}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's leave on A", func() bool {
		return a.l.find(func(ev *remote.Event) bool {
			return ev.Type == "m.room.member" && *ev.StateKey == string(bob) && ev.Sender == string(bob) &&
				contentOf(ev)["membership"] == "leave"
		}) != nil
	})
	st, err := a.r.RoomState(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(st, func(e remote.StateEntry) bool { return e.StateKey == string(bob) }) {
		t.Fatalf("bob still in the room's state: %+v", st)
	}
}

// TestResendAfterAcceptedSendIsOneMessage: a keyed send whose hub accepted it but whose caller's transaction failed
// (a crash before the bridge recorded it) is sent again with the same bytes, so both copies reach the other side
// under one event ID, which the listener deduplicates on; and a send after that is not repeated at all.
func TestResendAfterAcceptedSendIsOneMessage(t *testing.T) {
	n := &testNet{ports: map[string]string{}, ca: testca.NewT(t)}
	a, b := n.start(t, "mimi-a.test"), n.start(t, "mimi-b.test")
	ctx := a.ctx
	alice, bob := remote.UserID("@alice=hs-a:mimi-a.test"), remote.UserID("@bob=hs-b:mimi-b.test")
	room, err := a.r.NewRoom(ctx, alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = a.r.InviteToRoom(ctx, &remote.MembershipRequest{Room: room, Sender: alice, Target: bob}); err != nil {
		t.Fatal(err)
	}
	crash := errors.New("crashed before recording the send")
	req := &remote.SendRequest{Room: room, Sender: alice, Type: "m.room.message", Key: "$dag-event",
		Content: map[string]any{"msgtype": "m.text", "body": "once"},
		With:    func(context.Context, remote.EventID) error { return crash }}
	if _, err = a.r.SendRoomEvent(ctx, req); !errors.Is(err, crash) {
		t.Fatalf("first send: %v, want the With error", err)
	}
	var recorded remote.EventID
	req.With = func(_ context.Context, id remote.EventID) error { recorded = id; return nil }
	first, err := a.r.SendRoomEvent(ctx, req)
	if err != nil || recorded != first {
		t.Fatalf("second send: %s, %v (With saw %s)", first, err, recorded)
	}
	isOnce := func(ev *remote.Event) bool { return ev.Type == "m.room.message" && contentOf(ev)["body"] == "once" }
	waitFor(t, "both copies on B", func() bool { return b.l.count(isOnce) == 2 })
	b.l.mu.Lock()
	for _, ev := range b.l.events {
		if isOnce(ev) && ev.EventID != string(first) {
			t.Errorf("a copy arrived as %s, want %s", ev.EventID, first)
		}
	}
	b.l.mu.Unlock()
	// Recorded now: a third send with the key sends nothing and gives the same ID.
	third, err := a.r.SendRoomEvent(ctx, req)
	if err != nil || third != first {
		t.Fatalf("third send: %s, %v", third, err)
	}
	if _, err = a.r.SendRoomEvent(ctx, &remote.SendRequest{Room: room, Sender: alice, Type: "m.room.message",
		Content: map[string]any{"msgtype": "m.text", "body": "marker"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the marker on B", func() bool {
		return b.l.find(func(ev *remote.Event) bool { return contentOf(ev)["body"] == "marker" }) != nil
	})
	if n := b.l.count(isOnce); n != 2 {
		t.Fatalf("the recorded send went out again: %d copies", n)
	}
}

// TestBadInputIsRefusedWithTheSeamsErrors: identifiers that are not MIMI ones in Matrix form, events MIMI cannot
// carry and memberships it lacks are refused with remote's sentinels, and store nothing.
func TestBadInputIsRefusedWithTheSeamsErrors(t *testing.T) {
	n := &testNet{ports: map[string]string{}, ca: testca.NewT(t)}
	a := n.start(t, "mimi-a.test")
	ctx := a.ctx
	alice := remote.UserID("@alice=hs-a:mimi-a.test")
	room, err := a.r.NewRoom(ctx, alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	rows := func() int {
		var n int
		if err := a.r.db.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM mimi_rooms_send) + (SELECT COUNT(*) FROM mimi_rooms_message)`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := rows()
	for name, req := range map[string]*remote.SendRequest{
		"room without a server":   {Room: "!nohub", Sender: alice, Type: "m.room.message", Content: map[string]any{"body": "x"}},
		"room with a slash":       {Room: "!a/b:mimi-a.test", Sender: alice, Type: "m.room.message", Content: map[string]any{"body": "x"}},
		"sender not a user":       {Room: room, Sender: "alice", Type: "m.room.message", Content: map[string]any{"body": "x"}},
		"sticker":                 {Room: room, Sender: alice, Type: "m.sticker", Content: map[string]any{"body": "x"}, Key: "k1"},
		"empty message":           {Room: room, Sender: alice, Type: "m.room.message", Content: map[string]any{"msgtype": "m.text"}, Key: "k2"},
		"media without a host":    {Room: room, Sender: alice, Type: "m.room.message", Content: map[string]any{"msgtype": "m.image", "body": "a.png", "url": "mxc://hs/a"}, Key: "k3"},
		"reaction to nothing":     {Room: room, Sender: alice, Type: "m.reaction", Content: map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": "$nothex", "key": "x"}}, Key: "k4"},
		"content of a wrong type": {Room: room, Sender: alice, Type: "m.room.message", Content: map[string]any{"msgtype": 5}, Key: "k5"},
	} {
		if _, err := a.r.SendRoomEvent(ctx, req); !errors.Is(err, remote.ErrUnsupported) {
			t.Errorf("%s: %v, want ErrUnsupported", name, err)
		}
	}
	if err := a.r.KnockRoom(ctx, &remote.MembershipRequest{Room: room, Sender: alice}); !errors.Is(err, remote.ErrUnsupported) {
		t.Errorf("knock: %v", err)
	}
	if _, err := a.r.SetMembership(ctx, &remote.MembershipRequest{Room: room, Sender: alice, Membership: "knock"}); !errors.Is(err, remote.ErrUnsupported) {
		t.Errorf("knock membership: %v", err)
	}
	if _, err := a.r.JoinRoom(ctx, &remote.MembershipRequest{Room: room, Sender: "@carol=hs-x:mimi-x.test"}); !errors.Is(err, remote.ErrNotOurUser) {
		t.Errorf("join for another provider's user: %v", err)
	}
	if _, err := a.r.RoomState(ctx, "!unknown:mimi-a.test"); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("state of an unknown room: %v", err)
	}
	if after := rows(); after != before {
		t.Fatalf("refused sends stored %d rows", after-before)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	_ = testpg.StopShared()
	os.Exit(code)
}
