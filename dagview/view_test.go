package dagview

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream"
	mautrixappservice "maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/config"
)

const (
	hsToken = "hs-token"
	roomID  = id.RoomID("!room:hs.test")
	alice   = id.UserID("@alice:hs.test")
	bot     = id.UserID("@lmbridge:hs.test")
)

func stateEvent(eventID, evtType, stateKey string, sender id.UserID, content map[string]any) map[string]any {
	return map[string]any{
		"event_id": eventID, "room_id": roomID, "type": evtType, "state_key": stateKey, "sender": sender,
		"origin_server_ts": 1700000000000, "content": content,
	}
}

func textEvent(eventID, body string) map[string]any {
	return map[string]any{
		"event_id": eventID, "room_id": roomID, "type": "m.room.message", "sender": alice,
		"origin_server_ts": 1700000000000, "content": map[string]any{"msgtype": "m.text", "body": body},
	}
}

// fakeHomeserver answers the few client-server calls the view makes; unit tests only, the e2e tests use real ones.
type fakeHomeserver struct {
	lock     sync.Mutex
	joins    int
	state    []map[string]any
	after    []map[string]any // what /messages returns after the /context token
	requests []string
}

func (f *fakeHomeserver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.lock.Lock()
	defer f.lock.Unlock()
	f.requests = append(f.requests, r.Method+" "+r.URL.Path)
	path := r.URL.Path
	reply := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(path, "/join"):
		f.joins++
		reply(map[string]any{"room_id": roomID})
	case r.Method == http.MethodGet && strings.HasSuffix(path, "/state"):
		reply(f.state)
	case r.Method == http.MethodGet && strings.Contains(path, "/context/"):
		reply(map[string]any{"events_after": []any{}, "end": "tok-after"})
	case r.Method == http.MethodGet && strings.HasSuffix(path, "/messages"):
		if r.URL.Query().Get("from") == "tok-after" {
			reply(map[string]any{"chunk": f.after, "start": "tok-after", "end": "tok-end"})
		} else {
			reply(map[string]any{"chunk": []any{}, "start": "tok-end"})
		}
	default:
		w.WriteHeader(http.StatusNotFound)
		reply(map[string]any{"errcode": "M_UNRECOGNIZED", "error": "not faked: " + path})
	}
}

type listenerRecorder struct {
	lock   sync.Mutex
	seen   []id.EventID
	failOn map[id.EventID]int
	view   *View
	topics []string
	// observe has every delivery record the topic and the stream length the listener sees at that moment.
	observe  bool
	topicAt  map[id.EventID]string
	streamAt map[id.EventID]int
}

func (l *listenerRecorder) HandleDAGEvent(ctx context.Context, evt *event.Event) error {
	l.lock.Lock()
	defer l.lock.Unlock()
	l.seen = append(l.seen, evt.ID)
	if l.failOn[evt.ID] > 0 {
		l.failOn[evt.ID]--
		return fmt.Errorf("induced failure")
	}
	if l.observe {
		if topic, err := l.view.State(ctx, evt.RoomID, event.StateTopic, ""); err == nil && topic != nil {
			l.topicAt[evt.ID] = topic.Content.AsTopic().Topic
		}
		if stream, err := l.view.Events(ctx, evt.RoomID, 0, 100); err == nil {
			l.streamAt[evt.ID] = len(stream)
		}
	}
	if evt.Type == event.StateTopic {
		// The state seen from inside the listener already includes the event being delivered.
		topic, err := l.view.State(ctx, evt.RoomID, event.StateTopic, "")
		if err == nil && topic != nil {
			l.topics = append(l.topics, topic.Content.AsTopic().Topic)
		}
	}
	return nil
}

func (l *listenerRecorder) events() []id.EventID {
	l.lock.Lock()
	defer l.lock.Unlock()
	return append([]id.EventID(nil), l.seen...)
}

type fixture struct {
	hs   *fakeHomeserver
	as   *appservice.AppService
	view *View
	rec  *listenerRecorder
	url  string
	// stop shuts the appservice down as a process exit would, without closing the database file for others.
	stop func()
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureTB(t)
}

// newFixtureTB builds the fixture for a test or a benchmark.
func newFixtureTB(t testing.TB) *fixture {
	t.Helper()
	return newFixtureAt(t, filepath.Join(t.TempDir(), "db.sqlite"))
}

// newFixtureAt builds the fixture over the SQLite database at path, which a second fixture may reopen after the
// first one stopped, as lmbridge does after a restart.
func newFixtureAt(t testing.TB, path string) *fixture {
	t.Helper()
	hs := &fakeHomeserver{state: []map[string]any{
		stateEvent("$create", "m.room.create", "", alice, map[string]any{"room_version": "11"}),
		stateEvent("$alice", "m.room.member", string(alice), alice, map[string]any{"membership": "join"}),
		stateEvent("$name", "m.room.name", "", alice, map[string]any{"name": "Seeded"}),
	}}
	server := httptest.NewServer(hs)
	t.Cleanup(server.Close)
	db, err := dbutil.NewWithDialect("file:"+path+"?_txlock=immediate", "sqlite3-fk-wal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	as, err := appservice.New(appservice.Params{
		Homeserver: config.Homeserver{Address: server.URL, Domain: "hs.test"},
		AppService: config.AppService{Hostname: "127.0.0.1", ID: "lmbridge", Bot: config.Bot{Username: "lmbridge"},
			UsernameTemplate: "lm_{{.}}", MaxBodyBytes: 1 << 20},
		Registration: &mautrixappservice.Registration{
			ID: "lmbridge", AppToken: "as-token", ServerToken: hsToken, SenderLocalpart: "lmbridge",
			Namespaces: mautrixappservice.Namespaces{UserIDs: mautrixappservice.NamespaceList{
				{Regex: `^@lmbridge:hs\.test$`, Exclusive: true}, {Regex: `^@lm_.+:hs\.test$`, Exclusive: true},
			}},
		},
		DB: db,
	})
	if err != nil {
		t.Fatal(err)
	}
	view := New(as, db)
	rec := &listenerRecorder{failOn: make(map[id.EventID]int), view: view,
		topicAt: make(map[id.EventID]string), streamAt: make(map[id.EventID]int)}
	view.SetListener(rec)
	ctx, cancel := context.WithCancel(zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).WithContext(context.Background()))
	if err = as.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	if err = view.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	if err = as.Start(ctx, view); err != nil {
		t.Fatal(err)
	}
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			cancel()
			as.Stop()
		})
	}
	t.Cleanup(stop)
	return &fixture{hs: hs, as: as, view: view, rec: rec, url: "http://" + as.Addr().String(), stop: stop}
}

func (f *fixture) push(t *testing.T, txnID string, events ...map[string]any) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"events": events})
	req, _ := http.NewRequest(http.MethodPut, f.url+"/_matrix/app/v1/transactions/"+txnID, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+hsToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("transaction %s: %d", txnID, resp.StatusCode)
	}
}

func (f *fixture) waitDelivered(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var delivered int
		err := f.view.db.QueryRow(context.Background(), "SELECT COUNT(*) FROM dagview_event WHERE delivered_at IS NOT NULL").Scan(&delivered)
		if err == nil && delivered >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d delivered events (have %d, %v)", n, delivered, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestInviteJoinsSeedsAndKeepsStateFromStream(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.push(t, "1", stateEvent("$invite", "m.room.member", string(bot), alice, map[string]any{"membership": "invite"}))
	f.push(t, "2",
		stateEvent("$botjoin", "m.room.member", string(bot), bot, map[string]any{"membership": "join"}),
		textEvent("$m1", "one"),
		stateEvent("$topic", "m.room.topic", "", alice, map[string]any{"topic": "from the stream"}),
		textEvent("$m2", "two"),
	)
	f.waitDelivered(t, 5)

	if f.hs.joins != 1 {
		t.Errorf("bot joined %d times, want 1", f.hs.joins)
	}
	want := "[$invite $botjoin $m1 $topic $m2]"
	if got := fmt.Sprint(f.rec.events()); got != want {
		t.Errorf("listener got %s, want %s", got, want)
	}
	if fmt.Sprint(f.rec.topics) != "[from the stream]" {
		t.Errorf("listener saw topics %v, want the delivered event applied", f.rec.topics)
	}
	room, err := f.view.Room(ctx, roomID)
	if err != nil || room == nil {
		t.Fatalf("Room: %v %v", room, err)
	}
	if !room.Seeded || !room.BotJoined || room.Position != 5 || room.LastEventID != "$m2" {
		t.Errorf("room %+v, want seeded, bot joined, cursor at 5/$m2", room)
	}
	name, err := f.view.State(ctx, roomID, event.StateRoomName, "")
	if err != nil || name == nil || name.Content.AsRoomName().Name != "Seeded" {
		t.Errorf("seeded name: %v %v", name, err)
	}
	members, err := f.view.Members(ctx, roomID)
	if err != nil || members[alice] != event.MembershipJoin || members[bot] != event.MembershipJoin {
		t.Errorf("members %v %v", members, err)
	}
	stream, err := f.view.Events(ctx, roomID, 2, 10)
	if err != nil || len(stream) != 3 || stream[0].Event.ID != "$m1" || stream[0].Position != 3 {
		t.Fatalf("Events after 2: %v %v", stream, err)
	}
	if body := stream[0].Event.Content.AsMessage().Body; body != "one" {
		t.Errorf("stored content body %q, want one", body)
	}
}

func TestListenerErrorIsRedeliveredAndCounted(t *testing.T) {
	f := newFixture(t)
	f.rec.failOn["$m1"] = 1
	f.push(t, "1", textEvent("$m0", "zero"), textEvent("$m1", "one"), textEvent("$m2", "two"))
	f.waitDelivered(t, 3)
	if got := fmt.Sprint(f.rec.events()); got != "[$m0 $m1 $m1 $m2]" {
		t.Errorf("listener got %s, want $m1 twice and in order", got)
	}
	stream, err := f.view.Events(context.Background(), roomID, 0, 10)
	if err != nil || len(stream) != 3 {
		t.Fatalf("Events: %v %v", stream, err)
	}
	for _, se := range stream {
		want := 1
		if se.Event.ID == "$m1" {
			want = 2
		}
		if se.Deliveries != want {
			t.Errorf("%s deliveries %d, want %d", se.Event.ID, se.Deliveries, want)
		}
	}
}

func TestCatchUpQueuesMissedEventsAfterCursor(t *testing.T) {
	f := newFixture(t)
	ctx := zerolog.Nop().WithContext(context.Background())
	f.push(t, "1",
		stateEvent("$botjoin", "m.room.member", string(bot), bot, map[string]any{"membership": "join"}),
		textEvent("$m1", "one"),
	)
	f.waitDelivered(t, 2)
	// The homeserver has $m1 again (already known), then two events lmbridge never received.
	f.hs.after = []map[string]any{textEvent("$m1", "one"), textEvent("$missed1", "x"), textEvent("$missed2", "y")}
	n, err := f.view.CatchUp(ctx, roomID)
	if err != nil || n != 2 {
		t.Fatalf("CatchUp: %d %v, want 2 new events", n, err)
	}
	f.waitDelivered(t, 4)
	if got := fmt.Sprint(f.rec.events()); got != "[$botjoin $m1 $missed1 $missed2]" {
		t.Errorf("listener got %s", got)
	}
	// A second catch-up finds nothing new.
	if n, err = f.view.CatchUp(ctx, roomID); err != nil || n != 0 {
		t.Errorf("second CatchUp: %d %v, want 0", n, err)
	}
	room, _ := f.view.Room(ctx, roomID)
	if room.LastEventID != "$missed2" || room.Position != 4 {
		t.Errorf("cursor %d/%s, want 4/$missed2", room.Position, room.LastEventID)
	}
}

// A run of events the room worker finds ready together is appended in one pass (the stream already holds the whole
// run when the listener gets its first event), yet each event is delivered in order and sees the state as of itself:
// a state event in the middle of the run starts a pass of its own.
func TestBatchAppendsRunDeliversInOrderWithStatePerEvent(t *testing.T) {
	f := newFixture(t)
	f.rec.observe = true
	f.push(t, "1", textEvent("$m0", "zero"))
	f.waitDelivered(t, 1)
	f.push(t, "2",
		stateEvent("$topic1", "m.room.topic", "", alice, map[string]any{"topic": "one"}),
		textEvent("$m1", "one"),
		textEvent("$m2", "two"),
		stateEvent("$topic2", "m.room.topic", "", alice, map[string]any{"topic": "two"}),
		textEvent("$m3", "three"),
	)
	f.waitDelivered(t, 6)
	if got := fmt.Sprint(f.rec.events()); got != "[$m0 $topic1 $m1 $m2 $topic2 $m3]" {
		t.Errorf("listener got %s, want every event once, in order", got)
	}
	f.rec.lock.Lock()
	defer f.rec.lock.Unlock()
	wantTopic := map[id.EventID]string{"$topic1": "one", "$m1": "one", "$m2": "one", "$topic2": "two", "$m3": "two"}
	for eventID, want := range wantTopic {
		if got := f.rec.topicAt[eventID]; got != want {
			t.Errorf("listener saw topic %q at %s, want %q", got, eventID, want)
		}
	}
	// $topic1, $m1 and $m2 went in one pass, $topic2 and $m3 in the next.
	wantStream := map[id.EventID]int{"$m0": 1, "$topic1": 4, "$m1": 4, "$m2": 4, "$topic2": 6, "$m3": 6}
	for eventID, want := range wantStream {
		if got := f.rec.streamAt[eventID]; got != want {
			t.Errorf("stream held %d events when %s was delivered, want %d", got, eventID, want)
		}
	}
	room, err := f.view.Room(context.Background(), roomID)
	if err != nil || room == nil || room.Position != 6 || room.LastEventID != "$m3" {
		t.Errorf("room %+v %v, want cursor at 6/$m3", room, err)
	}
	stream, err := f.view.Events(context.Background(), roomID, 0, 10)
	if err != nil || len(stream) != 6 {
		t.Fatalf("Events: %v %v", stream, err)
	}
	for i, se := range stream {
		if se.Position != int64(i+1) || se.Deliveries != 1 {
			t.Errorf("%s at position %d delivered %d times, want position %d once", se.Event.ID, se.Position, se.Deliveries, i+1)
		}
	}
}

// A process that stops in the middle of a run appended in one pass (its listener never got the run's last events)
// leaves them in the stream undelivered; after the restart the inbox offers them again and they are delivered, in
// order, with the interrupted delivery counted.
func TestBatchInterruptedMidwayIsRedeliveredAfterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.sqlite")
	f := newFixtureAt(t, path)
	f.push(t, "1", textEvent("$m0", "zero"))
	f.waitDelivered(t, 1)
	f.rec.lock.Lock()
	f.rec.failOn["$m2"] = 1000
	f.rec.lock.Unlock()
	f.push(t, "2", textEvent("$m1", "one"), textEvent("$m2", "two"), textEvent("$m3", "three"))
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(fmt.Sprint(f.rec.events()), "$m2") {
		if time.Now().After(deadline) {
			t.Fatalf("listener never got $m2: %v", f.rec.events())
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.stop()
	if got := fmt.Sprint(f.rec.events()); got != "[$m0 $m1 $m2]" {
		t.Fatalf("first process's listener got %s, want it stopped at $m2", got)
	}
	stream, err := f.view.Events(context.Background(), roomID, 0, 10)
	if err != nil || len(stream) != 4 || stream[3].Event.ID != "$m3" || stream[3].Deliveries != 1 {
		t.Fatalf("stream after the stop: %v %v, want $m3 appended with $m1 and $m2 before its delivery", stream, err)
	}

	g := newFixtureAt(t, path)
	g.waitDelivered(t, 4)
	got := fmt.Sprint(g.rec.events())
	if got != "[$m2 $m3]" && got != "[$m1 $m2 $m3]" {
		t.Errorf("restarted listener got %s, want $m2 then $m3 (and $m1 only if its mark was lost)", got)
	}
	stream, err = g.view.Events(context.Background(), roomID, 0, 10)
	if err != nil || len(stream) != 4 {
		t.Fatalf("stream after the restart: %v %v", stream, err)
	}
	for i, se := range stream {
		if se.Position != int64(i+1) || se.Event.ID != id.EventID(fmt.Sprintf("$m%d", i)) {
			t.Errorf("stream position %d holds %s, want $m%d", se.Position, se.Event.ID, i)
		}
	}
	if stream[3].Deliveries != 2 {
		t.Errorf("$m3 counted %d deliveries, want 2 (the interrupted one and the one after the restart)", stream[3].Deliveries)
	}
}

// TestRunCatchUpFindsLostPushesWithoutARestart: events the homeserver never pushed (it restarted with its queue in
// memory) reach the listener at the next periodic catch-up, once, in order.
func TestRunCatchUpFindsLostPushesWithoutARestart(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(zerolog.Nop().WithContext(context.Background()))
	f.push(t, "1",
		stateEvent("$botjoin", "m.room.member", string(bot), bot, map[string]any{"membership": "join"}),
		textEvent("$m1", "one"),
	)
	f.waitDelivered(t, 2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.view.RunCatchUp(ctx, 50*time.Millisecond)
	}()
	defer func() { cancel(); <-done }()
	time.Sleep(100 * time.Millisecond)
	f.hs.lock.Lock()
	f.hs.after = []map[string]any{textEvent("$lost1", "x"), textEvent("$lost2", "y")}
	f.hs.lock.Unlock()
	f.waitDelivered(t, 4)
	time.Sleep(150 * time.Millisecond)
	if got := fmt.Sprint(f.rec.events()); got != "[$botjoin $m1 $lost1 $lost2]" {
		t.Errorf("listener got %s, want the lost events once, after the others", got)
	}
}
