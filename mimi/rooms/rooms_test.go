package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"net"
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
}

func (n *testNet) start(t *testing.T, domain string) *side {
	t.Helper()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	ctx := log.WithContext(context.Background())
	db, err := database.Open(ctx, config.Database{Type: "sqlite3-fk-wal",
		URI: "file:" + filepath.Join(t.TempDir(), domain+".db") + "?_txlock=immediate", MaxOpenConns: 1, MaxIdleConns: 2})
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
	r, err := New(ctx, Config{Provider: pc, IsLocalUser: func(u remote.UserID) bool { return strings.HasSuffix(string(u), ":"+domain) }})
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
	n := &testNet{ports: map[string]string{}, ca: testca.NewT(t)}
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
