package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
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

	"github.com/lmbridge/lmbridge/config"
)

const testHSToken = "hs-token-for-tests"

func testRegistration() *mautrixappservice.Registration {
	return &mautrixappservice.Registration{
		ID:              "lmbridge",
		URL:             "http://127.0.0.1:1",
		AppToken:        "as-token-for-tests",
		ServerToken:     testHSToken,
		SenderLocalpart: "lmbridge",
		Namespaces: mautrixappservice.Namespaces{
			UserIDs: mautrixappservice.NamespaceList{
				{Regex: `^@lmbridge:hs\.test$`, Exclusive: true},
				{Regex: `^@lm_.+:hs\.test$`, Exclusive: true},
			},
			RoomAliases: mautrixappservice.NamespaceList{{Regex: `^#lm_.+:hs\.test$`, Exclusive: true}},
		},
	}
}

// openTestDB opens the database as lmbridge does with the example config: the statement cache in the URI, one
// connection.
func openTestDB(t testing.TB, path string) *dbutil.Database {
	t.Helper()
	cfg := config.Database{Type: "sqlite3-fk-wal", URI: "file:" + path + "?_txlock=immediate"}
	db, err := dbutil.NewWithDialect(cfg.DriverURI(), cfg.Type)
	if err != nil {
		t.Fatalf("failed to open database: %v", err)
	}
	db.RawDB.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// recorder is an EventHandler that records what it was given, per room, and can be told to block or fail.
type recorder struct {
	lock   sync.Mutex
	events map[id.RoomID][]id.EventID
	calls  map[id.EventID]int
	block  map[id.RoomID]chan struct{}
	fail   map[id.EventID]int
}

func newRecorder() *recorder {
	return &recorder{
		events: make(map[id.RoomID][]id.EventID),
		calls:  make(map[id.EventID]int),
		block:  make(map[id.RoomID]chan struct{}),
		fail:   make(map[id.EventID]int),
	}
}

func (r *recorder) HandleEvent(ctx context.Context, evt *event.Event) error {
	r.lock.Lock()
	gate := r.block[evt.RoomID]
	r.lock.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.lock.Lock()
	defer r.lock.Unlock()
	r.calls[evt.ID]++
	if r.fail[evt.ID] > 0 {
		r.fail[evt.ID]--
		return fmt.Errorf("induced failure for %s", evt.ID)
	}
	r.events[evt.RoomID] = append(r.events[evt.RoomID], evt.ID)
	return nil
}

func (r *recorder) roomEvents(roomID id.RoomID) []id.EventID {
	r.lock.Lock()
	defer r.lock.Unlock()
	return append([]id.EventID(nil), r.events[roomID]...)
}

func (r *recorder) callCount(eventID id.EventID) int {
	r.lock.Lock()
	defer r.lock.Unlock()
	return r.calls[eventID]
}

type testAS struct {
	*AppService
	url    string
	cancel context.CancelFunc
	db     *dbutil.Database
}

func startTestAS(t testing.TB, dbPath string, handler EventHandler, maxBody int64) *testAS {
	t.Helper()
	db := openTestDB(t, dbPath)
	as, err := New(Params{
		Homeserver: config.Homeserver{Address: "http://127.0.0.1:1", Domain: "hs.test"},
		AppService: config.AppService{
			Hostname: "127.0.0.1", Port: 0, ID: "lmbridge",
			Bot:              config.Bot{Username: "lmbridge"},
			UsernameTemplate: "lm_{{.}}", MaxBodyBytes: maxBody,
		},
		Registration: testRegistration(),
		DB:           db,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	ctx, cancel := context.WithCancel(log.WithContext(context.Background()))
	if err = as.Upgrade(ctx); err != nil {
		t.Fatalf("Upgrade: %v", err)
	}
	if err = as.Start(ctx, handler); err != nil {
		t.Fatalf("Start: %v", err)
	}
	tas := &testAS{AppService: as, url: "http://" + as.Addr().String(), cancel: cancel, db: db}
	t.Cleanup(tas.stop)
	return tas
}

func (tas *testAS) stop() {
	tas.cancel()
	tas.Stop()
}

func msgEvent(roomID id.RoomID, eventID id.EventID, body string) map[string]any {
	return map[string]any{
		"event_id": eventID, "room_id": roomID, "type": "m.room.message", "sender": "@alice:hs.test",
		"origin_server_ts": 1700000000000, "content": map[string]any{"msgtype": "m.text", "body": body},
	}
}

func txnBody(events ...map[string]any) []byte {
	if events == nil {
		events = []map[string]any{}
	}
	body, _ := json.Marshal(map[string]any{"events": events})
	return body
}

type response struct {
	status  int
	errcode string
	message string
}

func (tas *testAS) put(t testing.TB, txnID string, body []byte, header, query string) response {
	t.Helper()
	url := tas.url + "/_matrix/app/v1/transactions/" + txnID
	if query != "" {
		url += "?access_token=" + query
	}
	req, err := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if header != "" {
		req.Header.Set("Authorization", "Bearer "+header)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("PUT %s: %v", txnID, err)
	}
	defer resp.Body.Close()
	var errBody struct {
		ErrCode string `json:"errcode"`
		Error   string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&errBody)
	return response{status: resp.StatusCode, errcode: errBody.ErrCode, message: errBody.Error}
}

func (tas *testAS) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	if err := tas.db.QueryRow(context.Background(), "SELECT COUNT(*) FROM "+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTransactionBadInputIsRejectedAndNothingStored(t *testing.T) {
	tas := startTestAS(t, filepath.Join(t.TempDir(), "as.db"), newRecorder(), 4096)
	good := txnBody(msgEvent("!r:hs.test", "$e1", "hi"))
	withField := func(key string, value any) []byte {
		evt := msgEvent("!r:hs.test", "$e1", "hi")
		if value == nil {
			delete(evt, key)
		} else {
			evt[key] = value
		}
		return txnBody(evt)
	}
	cases := []struct {
		name          string
		body          []byte
		header, query string
		status        int
		errcode       string
		mentions      string
	}{
		{"no token", good, "", "", http.StatusUnauthorized, "M_MISSING_TOKEN", "hs_token"},
		{"wrong header token", good, "nope", "", http.StatusForbidden, "M_FORBIDDEN", "hs_token"},
		{"wrong query token", good, "", "nope", http.StatusForbidden, "M_FORBIDDEN", "hs_token"},
		{"header right, query wrong", good, testHSToken, "nope", http.StatusForbidden, "M_FORBIDDEN", "hs_token"},
		{"malformed JSON", []byte(`{"events": [`), testHSToken, "", http.StatusBadRequest, "M_NOT_JSON", "JSON"},
		{"empty body", nil, testHSToken, "", http.StatusBadRequest, "M_NOT_JSON", "JSON"},
		{"not an object", []byte(`[1,2]`), testHSToken, "", http.StatusBadRequest, "M_BAD_JSON", "object"},
		{"missing events", []byte(`{"ephemeral": []}`), testHSToken, "", http.StatusBadRequest, "M_BAD_JSON", "events"},
		{"events not an array", []byte(`{"events": {}}`), testHSToken, "", http.StatusBadRequest, "M_BAD_JSON", "array"},
		{"event not an object", []byte(`{"events": ["x"]}`), testHSToken, "", http.StatusBadRequest, "M_BAD_JSON", "object"},
		{"missing event_id", withField("event_id", nil), testHSToken, "", http.StatusBadRequest, "M_BAD_JSON", "event_id"},
		{"missing room_id", withField("room_id", nil), testHSToken, "", http.StatusBadRequest, "M_BAD_JSON", "room_id"},
		{"missing sender", withField("sender", nil), testHSToken, "", http.StatusBadRequest, "M_BAD_JSON", "sender"},
		{"missing content", withField("content", nil), testHSToken, "", http.StatusBadRequest, "M_BAD_JSON", "content"},
		{"room_id a number", withField("room_id", 5), testHSToken, "", http.StatusBadRequest, "M_BAD_JSON", "room_id"},
		{"ts a string", withField("origin_server_ts", "soon"), testHSToken, "", http.StatusBadRequest, "M_BAD_JSON", "origin_server_ts"},
		{"content a string", withField("content", "hi"), testHSToken, "", http.StatusBadRequest, "M_BAD_JSON", "content"},
		{"state_key a number", withField("state_key", 1), testHSToken, "", http.StatusBadRequest, "M_BAD_JSON", "state_key"},
		{"oversize", txnBody(msgEvent("!r:hs.test", "$e1", strings.Repeat("x", 5000))), testHSToken, "", http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "limit"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := tas.put(t, fmt.Sprintf("bad%d", i), tc.body, tc.header, tc.query)
			if resp.status != tc.status || resp.errcode != tc.errcode {
				t.Errorf("got %d %s (%q), want %d %s", resp.status, resp.errcode, resp.message, tc.status, tc.errcode)
			}
			if !strings.Contains(resp.message, tc.mentions) {
				t.Errorf("error message %q does not mention %q", resp.message, tc.mentions)
			}
			if n := tas.count(t, "appservice_transaction"); n != 0 {
				t.Errorf("%d transaction rows stored", n)
			}
			if n := tas.count(t, "appservice_event"); n != 0 {
				t.Errorf("%d event rows stored", n)
			}
		})
	}
	// The same body with the right token is accepted: the rejections above were about the input, not the setup.
	if resp := tas.put(t, "good", good, testHSToken, ""); resp.status != http.StatusOK {
		t.Fatalf("good transaction: %d %s %s", resp.status, resp.errcode, resp.message)
	}
	if resp := tas.put(t, "legacy", txnBody(msgEvent("!r:hs.test", "$e2", "hi")), "", testHSToken); resp.status != http.StatusOK {
		t.Fatalf("legacy access_token transaction: %d %s %s", resp.status, resp.errcode, resp.message)
	}
	if n := tas.count(t, "appservice_event"); n != 2 {
		t.Fatalf("%d event rows stored, want 2", n)
	}
}

func TestRepeatedTransactionIsHandledOnce(t *testing.T) {
	rec := newRecorder()
	tas := startTestAS(t, filepath.Join(t.TempDir(), "as.db"), rec, 1<<20)
	room := id.RoomID("!r:hs.test")
	body := txnBody(msgEvent(room, "$a", "1"), msgEvent(room, "$b", "2"))
	for range 3 {
		if resp := tas.put(t, "1", body, testHSToken, ""); resp.status != http.StatusOK {
			t.Fatalf("PUT: %d %s", resp.status, resp.errcode)
		}
	}
	// Synapse on a fresh database starts again at txn 1, with other events: they must not be taken for a repeat.
	if resp := tas.put(t, "1", txnBody(msgEvent(room, "$c", "3")), testHSToken, ""); resp.status != http.StatusOK {
		t.Fatalf("PUT: %d %s", resp.status, resp.errcode)
	}
	waitFor(t, "three events", func() bool { return len(rec.roomEvents(room)) == 3 })
	time.Sleep(50 * time.Millisecond)
	if got := fmt.Sprint(rec.roomEvents(room)); got != "[$a $b $c]" {
		t.Fatalf("handled %v, want [$a $b $c]", got)
	}
	if n := tas.count(t, "appservice_transaction"); n != 2 {
		t.Errorf("%d transaction rows, want 2 (txn 1 twice, with different events)", n)
	}
}

func TestSlowRoomDoesNotBlockOthersAndOrderHolds(t *testing.T) {
	rec := newRecorder()
	slow, fast := id.RoomID("!slow:hs.test"), id.RoomID("!fast:hs.test")
	gate := make(chan struct{})
	rec.block[slow] = gate
	tas := startTestAS(t, filepath.Join(t.TempDir(), "as.db"), rec, 1<<20)
	const n = 50
	for i := range n {
		body := txnBody(
			msgEvent(slow, id.EventID(fmt.Sprintf("$s%02d", i)), "s"),
			msgEvent(fast, id.EventID(fmt.Sprintf("$f%02d", i)), "f"),
		)
		if resp := tas.put(t, fmt.Sprint(i), body, testHSToken, ""); resp.status != http.StatusOK {
			t.Fatalf("PUT: %d %s", resp.status, resp.errcode)
		}
	}
	waitFor(t, "the fast room while the slow one is blocked", func() bool { return len(rec.roomEvents(fast)) == n })
	if got := len(rec.roomEvents(slow)); got != 0 {
		t.Fatalf("slow room handled %d events while blocked", got)
	}
	close(gate)
	waitFor(t, "the slow room", func() bool { return len(rec.roomEvents(slow)) == n })
	for _, room := range []id.RoomID{slow, fast} {
		for i, evtID := range rec.roomEvents(room) {
			if want := fmt.Sprintf("$%c%02d", room[1], i); string(evtID) != want {
				t.Fatalf("room %s position %d: got %s, want %s", room, i, evtID, want)
			}
		}
	}
}

func TestRestartResumesWhereHandlingStopped(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "as.db")
	room := id.RoomID("!r:hs.test")
	first := newRecorder()
	gate := make(chan struct{})
	tas := startTestAS(t, dbPath, EventHandlerFunc(func(ctx context.Context, evt *event.Event) error {
		if evt.ID == "$e05" {
			// Stop in the middle: this event is acknowledged to the homeserver but never handled in this run.
			select {
			case <-gate:
			case <-ctx.Done():
			}
			return ctx.Err()
		}
		return first.HandleEvent(ctx, evt)
	}), 1<<20)
	var events []map[string]any
	for i := range 10 {
		events = append(events, msgEvent(room, id.EventID(fmt.Sprintf("$e%02d", i)), "x"))
	}
	if resp := tas.put(t, "t1", txnBody(events...), testHSToken, ""); resp.status != http.StatusOK {
		t.Fatalf("PUT: %d %s", resp.status, resp.errcode)
	}
	waitFor(t, "five events", func() bool { return len(first.roomEvents(room)) == 5 })
	tas.stop()
	close(gate)

	second := newRecorder()
	startTestAS(t, dbPath, second, 1<<20)
	waitFor(t, "the rest after restart", func() bool { return len(second.roomEvents(room)) == 5 })
	got := fmt.Sprint(append(first.roomEvents(room), second.roomEvents(room)...))
	want := "[$e00 $e01 $e02 $e03 $e04 $e05 $e06 $e07 $e08 $e09]"
	if got != want {
		t.Fatalf("handled %s, want %s", got, want)
	}
}

func TestHandlerFailureIsRetried(t *testing.T) {
	rec := newRecorder()
	rec.fail["$a"] = 2
	tas := startTestAS(t, filepath.Join(t.TempDir(), "as.db"), rec, 1<<20)
	room := id.RoomID("!r:hs.test")
	if resp := tas.put(t, "1", txnBody(msgEvent(room, "$a", "1"), msgEvent(room, "$b", "2")), testHSToken, ""); resp.status != http.StatusOK {
		t.Fatalf("PUT: %d", resp.status)
	}
	waitFor(t, "both events", func() bool { return len(rec.roomEvents(room)) == 2 })
	if got := fmt.Sprint(rec.roomEvents(room)); got != "[$a $b]" {
		t.Fatalf("handled %s, want [$a $b]", got)
	}
	if n := rec.callCount("$a"); n != 3 {
		t.Fatalf("$a offered %d times, want 3", n)
	}
}

func TestQueriesAndHealth(t *testing.T) {
	tas := startTestAS(t, filepath.Join(t.TempDir(), "as.db"), newRecorder(), 1<<20)
	get := func(path, token string) int {
		req, _ := http.NewRequest(http.MethodGet, tas.url+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	checks := []struct {
		path, token string
		want        int
	}{
		{"/_matrix/app/v1/users/@lmbridge:hs.test", testHSToken, http.StatusOK},
		{"/_matrix/app/v1/users/@lmbridge:hs.test", "", http.StatusUnauthorized},
		{"/_matrix/app/v1/users/@lmbridge:hs.test", "nope", http.StatusForbidden},
		{"/_matrix/app/v1/users/@alice:hs.test", testHSToken, http.StatusNotFound},
		{"/_matrix/app/v1/users/@lm_bob=remote.example:hs.test", testHSToken, http.StatusNotFound},
		{"/_matrix/app/v1/rooms/%23lm_x:hs.test", testHSToken, http.StatusNotFound},
		{"/_matrix/app/v1/thirdparty/protocol/x", testHSToken, http.StatusNotFound},
		{"/_matrix/mau/live", "", http.StatusOK},
		{"/_matrix/mau/ready", "", http.StatusServiceUnavailable},
	}
	for _, c := range checks {
		if got := get(c.path, c.token); got != c.want {
			t.Errorf("GET %s: %d, want %d", c.path, got, c.want)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, tas.url+"/_matrix/app/v1/ping", strings.NewReader(`{"transaction_id":"x"}`))
	req.Header.Set("Authorization", "Bearer "+testHSToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("ping: %d", resp.StatusCode)
	}
}

func TestTxnIDIsDeterministic(t *testing.T) {
	a := TxnID("@lm_a:hs", "!r:hs", "$lm1")
	if a != TxnID("@lm_a:hs", "!r:hs", "$lm1") {
		t.Fatal("same logical event gave two transaction IDs")
	}
	for _, other := range []string{TxnID("@lm_b:hs", "!r:hs", "$lm1"), TxnID("@lm_a:hs", "!s:hs", "$lm1"), TxnID("@lm_a:hs", "!r:hs", "$lm2")} {
		if other == a {
			t.Fatalf("different logical events share transaction ID %s", a)
		}
	}
}

func TestGhostUserID(t *testing.T) {
	tas := startTestAS(t, filepath.Join(t.TempDir(), "as.db"), newRecorder(), 1<<20)
	ghost, err := tas.GhostUserID("bob=remote.example")
	if err != nil || ghost != "@lm_bob=remote.example:hs.test" {
		t.Fatalf("GhostUserID: %s %v", ghost, err)
	}
	if tas.IsGhost(tas.BotUserID()) || tas.IsGhost("@alice:hs.test") || !tas.IsGhost(ghost) {
		t.Fatal("IsGhost misclassifies")
	}
	if _, err = tas.Ghost("@alice:hs.test"); err == nil {
		t.Fatal("Ghost accepted a user outside the namespace")
	}
}

func TestPermanentFailureIsRecordedAndRoomMovesOn(t *testing.T) {
	rec := newRecorder()
	tas := startTestAS(t, filepath.Join(t.TempDir(), "as.db"), EventHandlerFunc(func(ctx context.Context, evt *event.Event) error {
		if evt.ID == "$bad" {
			rec.lock.Lock()
			rec.calls[evt.ID]++
			rec.lock.Unlock()
			return Permanent(fmt.Errorf("unsupported"))
		}
		return rec.HandleEvent(ctx, evt)
	}), 1<<20)
	room := id.RoomID("!r:hs.test")
	if resp := tas.put(t, "1", txnBody(msgEvent(room, "$bad", "1"), msgEvent(room, "$good", "2")), testHSToken, ""); resp.status != http.StatusOK {
		t.Fatalf("PUT: %d", resp.status)
	}
	waitFor(t, "the good event", func() bool { return len(rec.roomEvents(room)) == 1 })
	// Handled marks are written when the room goes quiet (or with the next event's own write).
	waitFor(t, "the good event marked handled", func() bool {
		var n int
		err := tas.db.QueryRow(context.Background(), "SELECT COUNT(*) FROM appservice_event WHERE event_id='$good' AND handled_at IS NOT NULL").Scan(&n)
		return err == nil && n == 1
	})
	if n := rec.callCount("$bad"); n != 1 {
		t.Errorf("permanent failure offered %d times, want 1", n)
	}
	var lastError string
	err := tas.db.QueryRow(context.Background(), "SELECT last_error FROM appservice_event WHERE event_id='$bad' AND handled_at IS NOT NULL").Scan(&lastError)
	if err != nil || !strings.Contains(lastError, "unsupported") {
		t.Errorf("failure not recorded: %q %v", lastError, err)
	}

	// Pruning drops handled events but keeps the failed one for the operator.
	removed, err := tas.inbox.prune(context.Background(), time.Now().Add(time.Minute))
	if err != nil || removed != 1 {
		t.Fatalf("prune: %d %v, want 1 removed", removed, err)
	}
	if n := tas.count(t, "appservice_event"); n != 1 {
		t.Errorf("%d events left after pruning, want the failed one", n)
	}
}
