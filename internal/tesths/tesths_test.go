package tesths_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/internal/tesths"
)

const (
	testASID    = "tesths-as"
	testASToken = "tesths_as_token_0123456789"
	testHSToken = "tesths_hs_token_9876543210"
	testBot     = "testhsbot"
)

// asListener is a minimal application service: it records the events the homeserver pushes and every request whose
// token is not the expected hs_token.
type asListener struct {
	server *httptest.Server

	mu        sync.Mutex
	events    []*event.Event
	badTokens []string
	pings     int
	changed   chan struct{}
}

func newASListener(t *testing.T) *asListener {
	l := &asListener{changed: make(chan struct{}, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /_matrix/app/v1/transactions/{txnID}", func(w http.ResponseWriter, r *http.Request) {
		if !l.checkToken(w, r) {
			return
		}
		var txn struct {
			Events []*event.Event `json:"events"`
		}
		if err := json.NewDecoder(r.Body).Decode(&txn); err != nil {
			http.Error(w, `{"errcode":"M_NOT_JSON"}`, http.StatusBadRequest)
			return
		}
		l.mu.Lock()
		l.events = append(l.events, txn.Events...)
		l.mu.Unlock()
		l.notify()
		_, _ = w.Write([]byte("{}"))
	})
	mux.HandleFunc("POST /_matrix/app/v1/ping", func(w http.ResponseWriter, r *http.Request) {
		if !l.checkToken(w, r) {
			return
		}
		l.mu.Lock()
		l.pings++
		l.mu.Unlock()
		l.notify()
		_, _ = w.Write([]byte("{}"))
	})
	l.server = httptest.NewServer(mux) // binds 127.0.0.1
	t.Cleanup(l.server.Close)
	return l
}

func (l *asListener) checkToken(w http.ResponseWriter, r *http.Request) bool {
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if token == "" {
		token = r.URL.Query().Get("access_token")
	}
	if token != testHSToken {
		l.mu.Lock()
		l.badTokens = append(l.badTokens, fmt.Sprintf("%s %s with token %q", r.Method, r.URL.Path, token))
		l.mu.Unlock()
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"errcode":"M_FORBIDDEN"}`))
		return false
	}
	return true
}

func (l *asListener) notify() {
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// waitFor waits until match accepts one of the received events.
func (l *asListener) waitFor(t *testing.T, what string, match func(*event.Event) bool) *event.Event {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		l.mu.Lock()
		for _, evt := range l.events {
			if match(evt) {
				l.mu.Unlock()
				return evt
			}
		}
		l.mu.Unlock()
		select {
		case <-l.changed:
		case <-deadline:
			t.Fatalf("the application service never received %s", what)
		}
	}
}

func registration(t *testing.T, url, serverName string) []byte {
	t.Helper()
	ns := regexp.QuoteMeta(serverName)
	reg := map[string]any{
		"id":                testASID,
		"url":               url,
		"as_token":          testASToken,
		"hs_token":          testHSToken,
		"sender_localpart":  testBot,
		"rate_limited":      false,
		"receive_ephemeral": true,
		"namespaces": map[string]any{
			"users":   []map[string]any{{"exclusive": true, "regex": "^@tesths_.*:" + ns + "$"}},
			"aliases": []map[string]any{{"exclusive": true, "regex": "^#tesths_.*:" + ns + "$"}},
		},
	}
	out, err := yaml.Marshal(reg)
	if err != nil {
		t.Fatalf("failed to encode registration: %v", err)
	}
	return out
}

// TestHomeserverPushesToAppService checks the harness end to end on every installed homeserver: the server starts
// with an application service registration, a user registered through the shared secret creates a room with the
// bot, and the user's message reaches the application service listener with the right hs_token.
func TestHomeserverPushesToAppService(t *testing.T) {
	tesths.ForEachKind(t, func(t *testing.T, kind tesths.Kind) {
		ctx := context.Background()
		as := newASListener(t)
		start := time.Now()
		hs := tesths.StartT(t, kind, tesths.Options{Registrations: [][]byte{registration(t, as.server.URL, tesths.DefaultServerName)}})
		t.Logf("%s answered after %s", kind, time.Since(start).Round(time.Millisecond))
		if !strings.HasPrefix(hs.URL, "http://127.0.0.1:") {
			t.Fatalf("homeserver URL %q is not on loopback", hs.URL)
		}

		alice := hs.RegisterUserT(t, "alice", "alice-password", false)
		if want := id.NewUserID("alice", hs.ServerName); alice.UserID != want {
			t.Fatalf("registered user is %s, want %s", alice.UserID, want)
		}
		whoami, err := alice.Whoami(ctx)
		if err != nil {
			t.Fatalf("whoami with the registered user's token failed: %v", err)
		}
		if whoami.UserID != alice.UserID {
			t.Fatalf("whoami says %s, want %s", whoami.UserID, alice.UserID)
		}

		bot := id.NewUserID(testBot, hs.ServerName)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bot}})
		if err != nil {
			t.Fatalf("failed to create room: %v", err)
		}
		as.waitFor(t, "the bot's invite", func(evt *event.Event) bool {
			return evt.RoomID == room.RoomID && evt.Type == event.StateMember && evt.GetStateKey() == bot.String()
		})

		botClient, err := mautrix.NewClient(hs.URL, bot, testASToken)
		if err != nil {
			t.Fatalf("failed to create bot client: %v", err)
		}
		if _, err = botClient.JoinRoom(ctx, room.RoomID.String(), nil); err != nil {
			t.Fatalf("bot failed to join with the as_token: %v", err)
		}

		body := fmt.Sprintf("hello from %s at %d", kind, time.Now().UnixNano())
		sent, err := alice.SendText(ctx, room.RoomID, body)
		if err != nil {
			t.Fatalf("failed to send message: %v", err)
		}
		sentAt := time.Now()
		got := as.waitFor(t, "the message", func(evt *event.Event) bool { return evt.ID == sent.EventID })
		t.Logf("message reached the application service %s after the send returned", time.Since(sentAt).Round(time.Millisecond))
		if got.Sender != alice.UserID || got.RoomID != room.RoomID || got.Type != event.EventMessage {
			t.Fatalf("pushed event is %s from %s in %s, want m.room.message from %s in %s",
				got.Type.Type, got.Sender, got.RoomID, alice.UserID, room.RoomID)
		}
		var content struct {
			Body string `json:"body"`
		}
		if err = json.Unmarshal(got.Content.VeryRaw, &content); err != nil || content.Body != body {
			t.Fatalf("pushed message body is %q (%v), want %q", content.Body, err, body)
		}

		if err = hs.Ping(ctx, testASID); err != nil {
			t.Fatalf("ping failed: %v", err)
		}
		as.mu.Lock()
		pings, bad := as.pings, as.badTokens
		as.mu.Unlock()
		if kind == tesths.Synapse && pings == 0 {
			t.Errorf("Synapse answered the ping but the application service never received it")
		}
		if len(bad) > 0 {
			t.Errorf("the application service got requests without the hs_token: %v", bad)
		}
		if err = hs.Ping(ctx, "no-such-as"); !errors.Is(err, tesths.ErrUnknownAppService) {
			t.Errorf("ping of an unknown application service gave %v, want ErrUnknownAppService", err)
		}
	})
}

// TestStartReportsServerLog checks that a server refusing to start (here: a registration whose user namespace is
// not a valid regex) makes Start fail with the server's own complaint, and that nothing is left running.
func TestStartReportsServerLog(t *testing.T) {
	tesths.ForEachKind(t, func(t *testing.T, kind tesths.Kind) {
		bad := []byte(`id: broken
url: http://127.0.0.1:9
as_token: broken_as_token
hs_token: broken_hs_token
sender_localpart: brokenbot
namespaces:
  users:
  - exclusive: true
    regex: "^@broken_[:hs1"
`)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		hs, err := tesths.Start(ctx, kind, t.TempDir(), tesths.Options{Registrations: [][]byte{bad}})
		if err == nil {
			_ = hs.Stop()
			t.Fatalf("%s started with an invalid namespace regex", kind)
		}
		if !errors.Is(err, tesths.ErrExited) {
			t.Fatalf("want ErrExited, got %v", err)
		}
		// Each server's own words for the bad regex, which only its log holds.
		complaint := map[tesths.Kind]string{tesths.Dendrite: "Invalid regex", tesths.Synapse: "unterminated character set"}[kind]
		msg := err.Error()
		if !strings.Contains(msg, "last lines of") || !strings.Contains(msg, complaint) {
			t.Fatalf("the error does not carry the server log saying %q: %v", complaint, err)
		}
		t.Logf("start-up error as reported (%d bytes): %s", len(msg), msg[:strings.IndexByte(msg, '\n')])
	})
}

// TestStartOnTakenPort checks that a server whose port is taken fails with ErrPortInUse (the signal Start uses to
// retry on another port when it picked the port itself).
func TestStartOnTakenPort(t *testing.T) {
	tesths.ForEachKind(t, func(t *testing.T, kind tesths.Kind) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("failed to listen: %v", err)
		}
		defer l.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		hs, err := tesths.Start(ctx, kind, t.TempDir(), tesths.Options{Port: l.Addr().(*net.TCPAddr).Port})
		if err == nil {
			_ = hs.Stop()
			t.Fatalf("%s started on a port that was already taken", kind)
		}
		if !errors.Is(err, tesths.ErrPortInUse) {
			t.Fatalf("want ErrPortInUse, got %v", err)
		}
	})
}

// TestStopEndsServer checks that after Stop the server no longer answers and its port is free again.
func TestStopEndsServer(t *testing.T) {
	tesths.ForEachKind(t, func(t *testing.T, kind tesths.Kind) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		hs, err := tesths.Start(ctx, kind, t.TempDir(), tesths.Options{})
		if err != nil {
			t.Fatalf("failed to start %s: %v", kind, err)
		}
		if err = hs.Stop(); err != nil {
			t.Fatalf("failed to stop %s: %v", kind, err)
		}
		if err = hs.Stop(); err != nil {
			t.Fatalf("second Stop failed: %v", err)
		}
		if _, err = http.Get(hs.URL + "/_matrix/client/versions"); err == nil {
			t.Fatalf("%s still answers at %s after Stop", kind, hs.URL)
		}
		l, err := net.Listen("tcp", strings.TrimPrefix(hs.URL, "http://"))
		if err != nil {
			t.Fatalf("the port is still taken after Stop: %v", err)
		}
		l.Close()
	})
}

// TestAvailableFollowsEnvironment checks that the environment decides which kinds are available, and that starting
// one that is not installed is a clear ErrUnavailable rather than a failed exec.
func TestAvailableFollowsEnvironment(t *testing.T) {
	t.Setenv(tesths.EnvDendriteBin, "")
	t.Setenv(tesths.EnvSynapseRoot, "/nonexistent/synapse-root")
	if got := tesths.Available(); len(got) != 1 || got[0] != tesths.Synapse {
		t.Fatalf("Available() = %v, want [synapse]", got)
	}
	_, err := tesths.Start(context.Background(), tesths.Dendrite, t.TempDir(), tesths.Options{})
	if !errors.Is(err, tesths.ErrUnavailable) || !strings.Contains(err.Error(), tesths.EnvDendriteBin) {
		t.Fatalf("Start without %s gave %v, want ErrUnavailable naming the variable", tesths.EnvDendriteBin, err)
	}
	if _, err = tesths.Start(context.Background(), "conduit", t.TempDir(), tesths.Options{}); !errors.Is(err, tesths.ErrUnknownKind) {
		t.Fatalf("Start of an unknown kind gave %v, want ErrUnknownKind", err)
	}
}
