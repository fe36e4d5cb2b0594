package linearize

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	mautrixfed "maunium.net/go/mautrix/federation"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/database"
	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// recorder is a Listener that keeps what it was told.
type recorder struct {
	lock    sync.Mutex
	events  map[string][]*Event
	invites []*Invite
	failed  map[string]string
	changed chan struct{}
}

func newRecorder() *recorder {
	return &recorder{events: make(map[string][]*Event), failed: make(map[string]string), changed: make(chan struct{}, 1)}
}

func (r *recorder) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) OnEvent(_ context.Context, evt *Event) error {
	r.lock.Lock()
	r.events[evt.RoomID] = append(r.events[evt.RoomID], evt)
	r.lock.Unlock()
	r.notify()
	return nil
}

func (r *recorder) OnInvite(_ context.Context, inv *Invite) error {
	r.lock.Lock()
	r.invites = append(r.invites, inv)
	r.lock.Unlock()
	r.notify()
	return nil
}

func (r *recorder) OnLPDUFailed(_ context.Context, _, lpduID, reason string) {
	r.lock.Lock()
	r.failed[lpduID] = reason
	r.lock.Unlock()
	r.notify()
}

func (r *recorder) roomEvents(roomID string) []*Event {
	r.lock.Lock()
	defer r.lock.Unlock()
	return slices.Clone(r.events[roomID])
}

// waitFor polls cond until it holds or the deadline passes.
func (r *recorder) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for !cond() {
		select {
		case <-r.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// network makes, starts and stops engines under test; directNet routes in process, httpNet over loopback HTTP.
type network interface {
	newNode(t testing.TB, name string) *node
	start(t testing.TB, nd *node)
	stop(t testing.TB, nd *node)
}

// node is one engine under test with its database path, key and recorder.
type node struct {
	name   string
	dbPath string
	key    *federation.SigningKey
	eng    *Engine
	rec    *recorder
	db     *dbutil.Database
	ln     net.Listener
	// skipper, when set, is a second listener that skips our own events.
	skipper *skipRecorder
	// appended is installed as the engine's append hook before it starts.
	appended func(eventID string, received time.Time)
	// wrapRemote, when set, wraps the real federation client the engine is given (httpNet only).
	wrapRemote func(Remote) Remote
	// setup, when set, is called with the engine before it starts (test hooks; httpNet only).
	setup func(e *Engine)
	// openDB, when set, opens the database instead of openTestDB (httpNet only).
	openDB func(t testing.TB, path string) *dbutil.Database
}

func testContext(t testing.TB) context.Context {
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	return log.WithContext(context.Background())
}

func openTestDB(t testing.TB, path string) *dbutil.Database {
	t.Helper()
	db, err := database.Open(context.Background(), config.Database{Type: "sqlite3-fk-wal", URI: "file:" + path + "?_txlock=immediate",
		MaxIdleConns: 2})
	if err != nil {
		t.Fatalf("failed to open database: %v", err)
	}
	// Restart tests close the pool themselves and open the file again; the checkpointer goes at the end.
	t.Cleanup(func() { _ = db.Close() })
	return db.Database
}

// keysOf is a KeyLookup over the nodes' keys.
type keyTable struct {
	lock sync.RWMutex
	keys map[string]map[string]ed25519.PublicKey
}

func (k *keyTable) add(server string, key *federation.SigningKey) {
	k.lock.Lock()
	defer k.lock.Unlock()
	if k.keys == nil {
		k.keys = make(map[string]map[string]ed25519.PublicKey)
	}
	k.keys[server] = map[string]ed25519.PublicKey{string(key.ID): key.Priv.Public().(ed25519.PublicKey)}
}

func (k *keyTable) VerifyKey(_ context.Context, server, keyID string) (ed25519.PublicKey, error) {
	k.lock.RLock()
	defer k.lock.RUnlock()
	if key, ok := k.keys[server][keyID]; ok {
		return key, nil
	}
	return nil, fmt.Errorf("no key %s for %s", keyID, server)
}

// directNet routes Remote calls straight to the other engines' Handler methods, through a JSON round trip. It tests
// room logic without the transport; the HTTP tests use the real one.
type directNet struct {
	// refuse, when set, answers a transaction instead of its destination (a non-nil error is returned as is).
	refuse func(origin, dest string) error
	lock   sync.RWMutex
	nodes  map[string]*Engine
	down   map[string]bool
	keys   keyTable
}

type directRemote struct {
	net    *directNet
	origin string
}

func (n *directNet) target(dest string) (federation.Handler, error) {
	n.lock.RLock()
	defer n.lock.RUnlock()
	if n.down[dest] || n.nodes[dest] == nil {
		return nil, fmt.Errorf("connection refused by %s", dest)
	}
	return n.nodes[dest].Federation(), nil
}

func roundTrip[T any](v any, err error) (T, error) {
	var out T
	if err != nil {
		return out, err
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return out, err
	}
	err = json.Unmarshal(raw, &out)
	return out, err
}

func (d directRemote) SendTransaction(ctx context.Context, dest, txnID string, txn *federation.Transaction) (*federation.SendResponse, error) {
	d.net.lock.RLock()
	refuse := d.net.refuse
	d.net.lock.RUnlock()
	if refuse != nil {
		if err := refuse(d.origin, dest); err != nil {
			return nil, err
		}
	}
	h, err := d.net.target(dest)
	if err != nil {
		return nil, err
	}
	return roundTrip[*federation.SendResponse](h.Send(ctx, d.origin, txnID, txn))
}

func (d directRemote) Invite(ctx context.Context, dest, txnID string, req *federation.InviteRequest) (*federation.InviteResponse, error) {
	h, err := d.net.target(dest)
	if err != nil {
		return nil, err
	}
	return roundTrip[*federation.InviteResponse](h.Invite(ctx, d.origin, txnID, req))
}

func (d directRemote) MakeMembership(ctx context.Context, dest, membership, roomID, userID string, versions []string) (*federation.MakeMembershipResponse, error) {
	h, err := d.net.target(dest)
	if err != nil {
		return nil, err
	}
	return roundTrip[*federation.MakeMembershipResponse](h.MakeMembership(ctx, d.origin, membership, roomID, userID, versions))
}

func (d directRemote) SendJoin(ctx context.Context, dest, txnID string, event json.RawMessage) (*federation.SendJoinResponse, error) {
	h, err := d.net.target(dest)
	if err != nil {
		return nil, err
	}
	return roundTrip[*federation.SendJoinResponse](h.SendMembership(ctx, d.origin, "join", txnID, event))
}

func (d directRemote) SendLeave(ctx context.Context, dest, txnID string, event json.RawMessage) error {
	h, err := d.net.target(dest)
	if err != nil {
		return err
	}
	_, err = h.SendMembership(ctx, d.origin, "leave", txnID, event)
	return err
}

func (d directRemote) SendKnock(ctx context.Context, dest, txnID string, event json.RawMessage) (*federation.SendKnockResponse, error) {
	h, err := d.net.target(dest)
	if err != nil {
		return nil, err
	}
	return roundTrip[*federation.SendKnockResponse](h.SendMembership(ctx, d.origin, "knock", txnID, event))
}

func (d directRemote) Backfill(ctx context.Context, dest, roomID string, from []string, limit int) (*federation.BackfillResponse, error) {
	h, err := d.net.target(dest)
	if err != nil {
		return nil, err
	}
	return roundTrip[*federation.BackfillResponse](h.Backfill(ctx, d.origin, roomID, from, limit))
}

func (n *directNet) newNode(t testing.TB, name string) *node {
	t.Helper()
	nd := &node{name: name, dbPath: filepath.Join(t.TempDir(), "lm.db"), key: mautrixfed.GenerateSigningKey()}
	n.keys.add(name, nd.key)
	n.start(t, nd)
	return nd
}

// start opens (or reopens) a node's database and starts its engine with a fresh recorder.
func (n *directNet) start(t testing.TB, nd *node) {
	t.Helper()
	ctx := testContext(t)
	nd.db = openTestDB(t, nd.dbPath)
	eng, err := New(ctx, config.LM{ServerName: nd.name}, nd.db, Options{
		SigningKey: nd.key, Keys: &n.keys, Remote: directRemote{net: n, origin: nd.name},
	})
	if err != nil {
		t.Fatalf("failed to create engine %s: %v", nd.name, err)
	}
	nd.rec = newRecorder()
	eng.AddListener("test", nd.rec)
	if err = eng.Start(ctx); err != nil {
		t.Fatalf("failed to start engine %s: %v", nd.name, err)
	}
	nd.eng = eng
	n.lock.Lock()
	if n.nodes == nil {
		n.nodes = make(map[string]*Engine)
		n.down = make(map[string]bool)
	}
	n.nodes[nd.name] = eng
	n.down[nd.name] = false
	n.lock.Unlock()
	t.Cleanup(func() { n.stop(t, nd) })
}

func (n *directNet) stop(t testing.TB, nd *node) {
	if nd.eng == nil {
		return
	}
	n.lock.Lock()
	n.down[nd.name] = true
	n.lock.Unlock()
	if err := nd.eng.Stop(context.Background()); err != nil {
		t.Errorf("failed to stop %s: %v", nd.name, err)
	}
	_ = nd.db.Close()
	nd.eng = nil
}

// must returns v, failing the test (by panic, which the test runner reports with the stack) on err.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func text(body string) map[string]any {
	return map[string]any{"msgtype": "m.text", "body": body}
}

func userAt(local, server string) string {
	return "@" + local + ":" + server
}

// httpNet runs every engine with its own federation listener on 127.0.0.1 over plain HTTP, its own SQLite file, the
// real federation client and key ring: server names are 127.0.0.1:PORT, reached through allow_http_peers.
type httpNet struct{}

func (httpNet) newNode(t testing.TB, _ string) *node {
	t.Helper()
	return newHTTPNode(t, nil)
}

// newHTTPNode starts an engine on loopback; appended, if set, is installed as the engine's append hook.
func newHTTPNode(t testing.TB, appended func(eventID string, received time.Time)) *node {
	return newHTTPNodeWithKey(t, mautrixfed.GenerateSigningKey(), appended)
}

// newHTTPNodeWithKey starts an engine on loopback that signs with key.
func newHTTPNodeWithKey(t testing.TB, key *mautrixfed.SigningKey, appended func(eventID string, received time.Time)) *node {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("failed to listen: %v", err)
	}
	nd := &node{name: ln.Addr().String(), dbPath: filepath.Join(t.TempDir(), "lm.db"), key: key}
	nd.ln = ln
	nd.appended = appended
	httpNet{}.start(t, nd)
	return nd
}

// newHTTPNodeWith starts an engine on loopback whose federation client is wrapped by wrap and whose hooks setup
// installs (either may be nil); both apply again at every restart.
func newHTTPNodeWith(t testing.TB, wrap func(Remote) Remote, setup func(e *Engine)) *node {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("failed to listen: %v", err)
	}
	nd := &node{name: ln.Addr().String(), dbPath: filepath.Join(t.TempDir(), "lm.db"), key: mautrixfed.GenerateSigningKey()}
	nd.ln, nd.wrapRemote, nd.setup = ln, wrap, setup
	httpNet{}.start(t, nd)
	return nd
}

func (httpNet) start(t testing.TB, nd *node) {
	t.Helper()
	ctx := testContext(t)
	ln := nd.ln
	nd.ln = nil
	if ln == nil {
		var err error
		// Rebind the same port: it is part of the server name. Retry briefly while the old socket closes.
		for i := 0; i < 50; i++ {
			if ln, err = net.Listen("tcp", nd.name); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("failed to rebind %s: %v", nd.name, err)
		}
	}
	if nd.openDB != nil {
		nd.db = nd.openDB(t, nd.dbPath)
	} else {
		nd.db = openTestDB(t, nd.dbPath)
	}
	cfg := config.LM{ServerName: nd.name, AllowPlainHTTP: true, AllowHTTPPeers: true}
	opts := Options{SigningKey: nd.key, Listener: ln}
	if nd.wrapRemote != nil {
		opts.Remote = nd.wrapRemote(newTestClient(nd.name, nd.key))
	}
	eng, err := New(ctx, cfg, nd.db, opts)
	if err != nil {
		t.Fatalf("failed to create engine %s: %v", nd.name, err)
	}
	nd.rec = newRecorder()
	eng.AddListener("test", nd.rec)
	if nd.skipper != nil {
		eng.AddListener("skipper", nd.skipper)
	}
	eng.appended = nd.appended
	if nd.setup != nil {
		nd.setup(eng)
	}
	if err = eng.Start(ctx); err != nil {
		t.Fatalf("failed to start engine %s: %v", nd.name, err)
	}
	nd.eng = eng
	t.Cleanup(func() { httpNet{}.stop(t, nd) })
}

// newTestClient is the federation client an httpNet engine would make itself.
func newTestClient(name string, key *federation.SigningKey) *federation.Client {
	client := federation.NewClient(name, key, federation.ClientOptions{AllowHTTPPeers: true})
	client.EventID = func(raw json.RawMessage) (string, error) {
		p, err := pdu.Parse(raw)
		if err != nil {
			return "", err
		}
		return p.EventID()
	}
	return client
}

func (httpNet) stop(t testing.TB, nd *node) {
	if nd.eng == nil {
		return
	}
	if err := nd.eng.Stop(context.Background()); err != nil {
		t.Errorf("failed to stop %s: %v", nd.name, err)
	}
	_ = nd.db.Close()
	nd.eng = nil
}
