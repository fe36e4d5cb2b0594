package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/database"
	"github.com/lmbridge/lmbridge/linearize"
)

// matrixCall is one thing the bridge asked of the homeserver.
type matrixCall struct {
	Op         string
	RoomID     id.RoomID
	Sender     id.UserID
	Target     id.UserID
	Type       string
	StateKey   string
	Content    Content
	TS         time.Time
	Key        string
	Membership event.Membership
	Reason     string
	Redacts    id.EventID
	Create     *mautrix.ReqCreateRoom
}

// fakeMatrix stands in for the homeserver: it records every call, answers with fresh event IDs and keeps the state
// that tests set, as dagview would.
type fakeMatrix struct {
	lock  sync.Mutex
	calls []matrixCall
	state map[id.RoomID][]*event.Event
	seq   int
	// forbid makes every call by these senders fail with M_FORBIDDEN, as a homeserver does for a ghost without power.
	forbid map[id.UserID]bool
}

func newFakeMatrix() *fakeMatrix {
	return &fakeMatrix{state: make(map[id.RoomID][]*event.Event), forbid: make(map[id.UserID]bool)}
}

func (f *fakeMatrix) record(c matrixCall) (id.EventID, error) {
	f.lock.Lock()
	defer f.lock.Unlock()
	if f.forbid[c.Sender] {
		return "", mautrix.HTTPError{Response: &http.Response{StatusCode: http.StatusForbidden},
			RespError: &mautrix.RespError{ErrCode: mautrix.MForbidden.ErrCode, Err: "not allowed"}}
	}
	f.calls = append(f.calls, c)
	f.seq++
	return id.EventID(fmt.Sprintf("$dag%d", f.seq)), nil
}

func toContent(v any) Content {
	data, _ := json.Marshal(v)
	var c Content
	_ = json.Unmarshal(data, &c)
	return c
}

func (f *fakeMatrix) SendMessage(_ context.Context, roomID id.RoomID, sender id.UserID, evtType event.Type, content any, ts time.Time, key string) (id.EventID, error) {
	return f.record(matrixCall{Op: "message", RoomID: roomID, Sender: sender, Type: evtType.Type, Content: toContent(content), TS: ts, Key: key})
}

func (f *fakeMatrix) SendState(_ context.Context, roomID id.RoomID, sender id.UserID, evtType event.Type, stateKey string, content any, ts time.Time) (id.EventID, error) {
	return f.record(matrixCall{Op: "state", RoomID: roomID, Sender: sender, Type: evtType.Type, StateKey: stateKey, Content: toContent(content), TS: ts})
}

func (f *fakeMatrix) Redact(_ context.Context, roomID id.RoomID, sender id.UserID, target id.EventID, reason, key string) (id.EventID, error) {
	return f.record(matrixCall{Op: "redact", RoomID: roomID, Sender: sender, Redacts: target, Reason: reason, Key: key})
}

func (f *fakeMatrix) SetMembership(_ context.Context, roomID id.RoomID, sender, target id.UserID, membership event.Membership, reason string) error {
	_, err := f.record(matrixCall{Op: "member", RoomID: roomID, Sender: sender, Target: target, Membership: membership, Reason: reason})
	return err
}

func (f *fakeMatrix) SetProfile(_ context.Context, user id.UserID, displayname string, avatar id.ContentURI) error {
	_, err := f.record(matrixCall{Op: "profile", Sender: user, Content: Content{"displayname": displayname, "avatar_url": avatar.String()}})
	return err
}

func (f *fakeMatrix) CreateRoom(_ context.Context, creator id.UserID, req *mautrix.ReqCreateRoom) (id.RoomID, error) {
	if _, err := f.record(matrixCall{Op: "create", Sender: creator, Create: req}); err != nil {
		return "", err
	}
	return id.RoomID(fmt.Sprintf("!portal%d:hs.example", f.seq)), nil
}

func (f *fakeMatrix) StateEvents(_ context.Context, roomID id.RoomID) ([]*event.Event, error) {
	f.lock.Lock()
	defer f.lock.Unlock()
	return f.state[roomID], nil
}

// setState adds or replaces a state event in a room, as dagview does when the stream carries one.
func (f *fakeMatrix) setState(evt *event.Event) {
	f.lock.Lock()
	defer f.lock.Unlock()
	list := f.state[evt.RoomID]
	for i, old := range list {
		if old.Type == evt.Type && *old.StateKey == *evt.StateKey {
			list[i] = evt
			return
		}
	}
	f.state[evt.RoomID] = append(list, evt)
}

func (f *fakeMatrix) callsOf(op string) []matrixCall {
	f.lock.Lock()
	defer f.lock.Unlock()
	var out []matrixCall
	for _, c := range f.calls {
		if c.Op == op {
			out = append(out, c)
		}
	}
	return out
}

func (f *fakeMatrix) reset() {
	f.lock.Lock()
	f.calls = nil
	f.lock.Unlock()
}

// mkEvent builds a DAG event as dagview hands it over: content raw and parsed where mautrix knows the type.
func mkEvent(roomID id.RoomID, evtID id.EventID, sender id.UserID, evtType event.Type, stateKey *string, content any) *event.Event {
	raw, _ := json.Marshal(content)
	evt := &event.Event{RoomID: roomID, ID: evtID, Sender: sender, Type: evtType, StateKey: stateKey, Timestamp: 1_700_000_000_000}
	if stateKey != nil {
		evt.Type.Class = event.StateEventType
	} else {
		evt.Type.Class = event.MessageEventType
	}
	_ = json.Unmarshal(raw, &evt.Content)
	_ = evt.Content.ParseRaw(evt.Type)
	return evt
}

func sk(s string) *string { return &s }

const (
	testHS   = "hs.example"
	testLM   = "lm.example.org"
	testBot  = id.UserID("@lmbridge:hs.example")
	alice    = id.UserID("@alice:hs.example")
	carol    = id.UserID("@carol:hs.example")
	aliceLM  = "@alice=hs.example:lm.example.org"
	carolLM  = "@carol=hs.example:lm.example.org"
	botLM    = "@lmbridge=hs.example:lm.example.org"
	bobLM    = "@bob:remote.example"
	bobGhost = id.UserID("@lm_bob=remote.example:hs.example")
	dagRoom  = id.RoomID("!dag:hs.example")
)

func testContext(t testing.TB) context.Context {
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
	return log.WithContext(context.Background())
}

func openRawDB(t testing.TB) *dbutil.Database {
	return openRawDBWith(t, "")
}

// openRawDBWith opens a fresh SQLite database as lmbridge opens it with the example config (the statement cache
// added to the URI, one connection), with extra URI parameters (e.g. "&_stmt_cache_size=0").
func openRawDBWith(t testing.TB, params string) *dbutil.Database {
	t.Helper()
	db, err := database.Open(context.Background(), config.Database{Type: "sqlite3-fk-wal",
		URI: "file:" + filepath.Join(t.TempDir(), "test.db") + "?_txlock=immediate" + params, MaxOpenConns: exampleMaxConns, MaxIdleConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db.Database
}

// exampleMaxConns is the example config's database.max_open_conns; -bridge.conns overrides it in the benchmarks.
const exampleMaxConns = 1

// newEngine is a real LM engine on its own database, used as hub without a network.
func newEngine(t testing.TB, db *dbutil.Database) *linearize.Engine {
	t.Helper()
	eng, err := linearize.New(context.Background(), config.LM{ServerName: testLM,
		SigningKeyPath: filepath.Join(t.TempDir(), "signing.key")}, db, linearize.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

type testBridge struct {
	*Bridge
	mx  *fakeMatrix
	eng *linearize.Engine
	// raw is the database the bridge and, when newTestBridge made it, the engine keep their tables in.
	raw *dbutil.Database
}

func newTestBridge(t testing.TB, lm LMSide, cfg config.Bridge) *testBridge {
	t.Helper()
	db := openRawDB(t)
	var eng *linearize.Engine
	if lm == nil {
		eng = newEngine(t, db)
		lm = eng
	}
	users, err := NewUserMapper(testHS, testLM, testBot, "lm_{{.}}")
	if err != nil {
		t.Fatal(err)
	}
	mx := newFakeMatrix()
	if cfg.Permissions == nil {
		cfg.Permissions = map[string]string{"*": "relay", testHS: "user", "@admin:hs.example": "admin"}
	}
	br, err := New(Params{Config: cfg, DB: db, Users: users, Matrix: mx, LM: lm})
	if err != nil {
		t.Fatal(err)
	}
	if err = br.Upgrade(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &testBridge{Bridge: br, mx: mx, eng: eng, raw: db}
}

// seedDAGRoom gives the fake homeserver a v12 room created by alice, with carol, the bot and bob's ghost joined.
func (tb *testBridge) seedDAGRoom() {
	mx := tb.mx
	mx.setState(mkEvent(dagRoom, "$create", alice, event.StateCreate, sk(""), map[string]any{"room_version": "12"}))
	mx.setState(mkEvent(dagRoom, "$pl", alice, event.StatePowerLevels, sk(""), map[string]any{
		"users": map[string]any{string(carol): 50, string(bobGhost): 50, string(testBot): 100}, "state_default": 50,
		"events": map[string]any{"m.room.power_levels": 100}}))
	mx.setState(mkEvent(dagRoom, "$jr", alice, event.StateJoinRules, sk(""), map[string]any{"join_rule": "restricted",
		"allow": []any{map[string]any{"type": "m.room_membership", "room_id": "!space:hs.example"}}}))
	mx.setState(mkEvent(dagRoom, "$hv", alice, event.StateHistoryVisibility, sk(""), map[string]any{"history_visibility": "joined"}))
	mx.setState(mkEvent(dagRoom, "$name", alice, event.StateRoomName, sk(""), map[string]any{"name": "Linked room"}))
	mx.setState(mkEvent(dagRoom, "$topic", alice, event.StateTopic, sk(""), map[string]any{"topic": "A topic"}))
	mx.setState(mkEvent(dagRoom, "$avatar", alice, event.StateRoomAvatar, sk(""), map[string]any{"url": "mxc://hs.example/avatar"}))
	for _, u := range []id.UserID{alice, carol, testBot, bobGhost} {
		mx.setState(mkEvent(dagRoom, id.EventID("$join-"+string(u)), u, event.StateMember, sk(string(u)),
			map[string]any{"membership": "join", "displayname": u.Localpart()}))
	}
}

// lmState returns the content of a state event of the LM room, from the engine's current state.
func (tb *testBridge) lmState(t testing.TB, roomID, evtType, stateKey string) Content {
	t.Helper()
	entries, err := tb.eng.CurrentState(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Type == evtType && e.StateKey == stateKey {
			return tb.lmEvent(t, e.EventID)["content"].(map[string]any)
		}
	}
	return nil
}

// lmEvent returns a stored LM event as JSON.
func (tb *testBridge) lmEvent(t testing.TB, eventID string) Content {
	t.Helper()
	stored, err := tb.eng.GetEventByID(context.Background(), eventID)
	if err != nil || stored == nil {
		t.Fatalf("LM event %s: %v, %v", eventID, stored, err)
	}
	var c Content
	if err = json.Unmarshal(stored.PDU, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return data
}

// noIDs maps no event at all.
type noIDs struct{}

func (noIDs) LMEventOf(context.Context, id.EventID) (string, error)  { return "", nil }
func (noIDs) DAGEventOf(context.Context, string) (id.EventID, error) { return "", nil }
