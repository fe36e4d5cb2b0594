// Package linearize is lmbridge as a Linearized Matrix server: the room engine that is hub for the rooms it creates and
// participant in rooms other hubs own. It keeps each room's log in the database (append-only, with the state before
// every event), fans accepted events out through a persisted outbox, and tells a Listener (the bridge) about every
// appended event, received invites and refused LPDUs.
//
// The event model, hashes, signatures and auth rules are in linearize/pdu and linearize/auth; the HTTP transport is
// linearize/federation; the tables, their queries and migrations are linearize/store; the sending of what is queued
// is linearize/outbox. This package joins them into rooms.
//
// The Engine's exported methods are the local API (create, send, join, leave, state, deliveries); rooms.go is the
// same API as the bridge's protocol-neutral seam, remote.Rooms, with the seam's typed IDs and errors. What other LM
// servers call (/send, make_ and send_ membership, /invite, the queries) is the unexported inbound type in send.go,
// hubmembership.go and query.go, served by the federation listener.
package linearize

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/outbox"
	"github.com/lmbridge/lmbridge/linearize/pdu"
	"github.com/lmbridge/lmbridge/linearize/store"
)

// DefaultRoomVersion is the room version of rooms we create when the config names none.
const DefaultRoomVersion = "org.matrix.i-d.ralston-mimi-linearized-matrix.02"

// Options are the parts of an Engine that tests (and an embedding program) may supply instead of the defaults.
type Options struct {
	// SigningKey is our ed25519 key; by default it is loaded from (or generated at) cfg.SigningKeyPath.
	SigningKey *federation.SigningKey
	// Remote sends requests to other LM servers; by default a federation client signing as us.
	Remote Remote
	// Keys finds other servers' verify keys; by default a federation key ring fetching from the servers themselves.
	Keys pdu.KeyLookup
	// Now is the clock used for origin_server_ts; time.Now by default.
	Now func() time.Time
	// Listener, when set, is served instead of binding lm.listen (tests bind 127.0.0.1:0 first to learn the port
	// that goes into the server name).
	Listener net.Listener
}

// Engine is one LM server: hub of the rooms it creates, participant in the others.
type Engine struct {
	cfg        config.LM
	serverName string
	store      *store.Store
	key        *federation.SigningKey
	keys       pdu.KeyLookup
	remote     Remote
	now        func() time.Time
	listeners  []namedListener

	// writeLock makes the engine the single writer of every room's log.
	writeLock sync.Mutex
	// sendQueue holds SendEventKeyed calls waiting for writeLock, handled together by the next holder.
	sendQueueLock sync.Mutex
	sendQueue     []*sendRequest
	// rooms caches each room's head and current state; only read or changed under writeLock.
	rooms map[string]*roomState
	// outboxSeq is the last seq given to an outbox row; only changed under writeLock.
	outboxSeq int64

	txnLock  sync.Mutex
	inflight map[string]*inflightTxn
	// appended, when set (benchmarks), is told of each event appended from a /send transaction and when that
	// transaction arrived.
	appended func(eventID string, received time.Time)
	joinLock sync.Mutex
	// joinRetryFor bounds how long a refused join is retried when we countersigned an invite for the user (see
	// joinAttempts); joinRetried, when set (tests), is told of each retry.
	joinRetryFor time.Duration
	joinRetried  func(err error)
	// pendingRooms holds the rooms with PDUs kept while their join was in flight and not appended yet: later PDUs
	// of these rooms queue behind them. pendingApply makes one applyPending run at a time.
	pendingRooms sync.Map
	pendingApply sync.Mutex
	// resumable are the joins a crash interrupted, found by New and resumed by Start.
	resumable []*store.Join
	// background counts the goroutines Start began that Stop waits for.
	background sync.WaitGroup
	// beforeJoinAnswer and inviteCountersigned, when set (tests), run as hub before send_join is answered and
	// before a countersigned invite is appended (an error fails the invite).
	beforeJoinAnswer    func(ctx context.Context, join *StoredEvent)
	inviteCountersigned func(ctx context.Context, eventID string) error

	// sentLPDUs maps the ID of each LPDU we sent and whose echo has not come back to our signature on it (see
	// isOwnEcho). Lost at a restart, which only costs a full verify of those echoes.
	sentLPDUs sync.Map

	// heads is each room's last event ID as committed, readable without writeLock (gap checks on /send).
	heads sync.Map

	outbox *outbox.Outbox
	// fanout holds the PDUs the outbox has yet to send, as hub.
	fanout *outbox.Bodies
	// recent holds the latest appended events in listener form, for delivery without a read.
	recent       *recentEvents
	dispatchLock sync.Mutex
	// dirty holds rooms with events the listeners have not been offered yet; invitesDirty likewise for invites.
	dirty map[string]struct{}
	// cursors caches listener cursors by listener name and room; owned by dispatchLoop's goroutine.
	cursors map[string]int64
	// storedCursors is what lm_listener_cursor holds for each entry of cursors, and since when; same owner.
	storedCursors map[string]storedCursor
	invitesDirty  bool
	dispatchWake  chan struct{}
	dispatchDone  chan struct{}
	// pruneDone is closed when the pruning loop has returned.
	pruneDone chan struct{}
	cancel    context.CancelFunc
	handler   http.Handler
	listener  net.Listener
	httpDone  chan error
}

// Room roles as stored.
const (
	RoleHub         = store.RoleHub
	RoleParticipant = store.RoleParticipant
)

// RoomInfo is what the engine knows about one LM room.
type RoomInfo = store.RoomInfo

// StoredEvent is one row of a room's log (Index ≥ 1) or an outlier known from send_join (Index -1).
type StoredEvent = store.StoredEvent

// StateEntry is one entry of a room's current state.
type StateEntry = store.StateEntry

var (
	// ErrUnknownRoom means the engine knows nothing about the room.
	ErrUnknownRoom = errors.New("unknown room")
	// ErrNotJoined means none of our users is joined to a room another hub owns, so we cannot send into it.
	ErrNotJoined = errors.New("no user of ours is joined to the room")
)

// New opens the engine's tables (upgrading them) and loads or generates the signing key. It does not listen yet.
func New(ctx context.Context, cfg config.LM, db *dbutil.Database, opts Options) (*Engine, error) {
	if cfg.ServerName == "" {
		return nil, fmt.Errorf("lm.server_name must be set")
	}
	if cfg.RoomVersion == "" {
		cfg.RoomVersion = DefaultRoomVersion
	}
	st, err := store.Open(ctx, db)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		cfg:           cfg,
		serverName:    cfg.ServerName,
		store:         st,
		key:           opts.SigningKey,
		keys:          opts.Keys,
		remote:        opts.Remote,
		now:           opts.Now,
		rooms:         make(map[string]*roomState),
		inflight:      make(map[string]*inflightTxn),
		joinRetryFor:  defaultJoinRetry,
		dispatchWake:  make(chan struct{}, 1),
		dirty:         make(map[string]struct{}),
		recent:        newRecentEvents(),
		fanout:        outbox.NewBodies(),
		cursors:       make(map[string]int64),
		storedCursors: make(map[string]storedCursor),
		invitesDirty:  true,
		listener:      opts.Listener,
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.key == nil {
		if cfg.SigningKeyPath == "" {
			return nil, fmt.Errorf("lm.signing_key_path must be set")
		}
		key, err := federation.LoadOrGenerateSigningKey(cfg.SigningKeyPath)
		if err != nil {
			return nil, fmt.Errorf("failed to load signing key: %w", err)
		}
		e.key = key
	}
	e.setupTransport()
	if err := e.recoverJoins(ctx); err != nil {
		return nil, err
	}
	seq, err := e.store.MaxOutboxSeq(ctx)
	if err != nil {
		return nil, err
	}
	e.outboxSeq = seq
	e.outbox = outbox.New(outbox.Config{Store: e.store, Sender: e.remote, Bodies: e.fanout, LPDUFailed: e.lpduFailed})
	return e, nil
}

// lpduFailed tells the listeners that the hub refused an LPDU of ours.
func (e *Engine) lpduFailed(ctx context.Context, roomID, lpduID, reason string) {
	e.sentLPDUs.Delete(lpduID)
	for _, nl := range e.listeners {
		nl.l.OnLPDUFailed(ctx, roomID, lpduID, reason)
	}
}

// ServerName is our LM server name.
func (e *Engine) ServerName() string {
	return e.serverName
}

// AddListener registers a listener under a stable name (its delivery cursors are stored under that name). Call it
// before Start.
func (e *Engine) AddListener(name string, l Listener) {
	nl := namedListener{name: name, l: l}
	if s, ok := l.(OwnEventsSkipper); ok {
		nl.skipOwn = s.SkipOwnEvents()
	}
	e.listeners = append(e.listeners, nl)
}

// Start resumes the outbox and listener delivery and starts the federation listener.
func (e *Engine) Start(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e.cancel = cancel
	// Listen first: the outbox's first transactions make their destinations fetch our key from this listener, and a
	// refused fetch would hold them in their key-fetch backoff.
	if err := e.startHTTP(runCtx); err != nil {
		cancel()
		e.cancel = nil
		return err
	}
	if err := e.outbox.Start(runCtx); err != nil {
		cancel()
		e.cancel = nil
		return errors.Join(err, e.stopHTTP())
	}
	e.dispatchDone = make(chan struct{})
	go e.dispatchLoop(runCtx)
	e.pruneDone = make(chan struct{})
	go func() {
		defer close(e.pruneDone)
		e.pruneLoop(runCtx)
	}()
	e.resumeInterrupted(runCtx)
	zerolog.Ctx(ctx).Info().Str("server_name", e.serverName).Msg("LM engine started")
	return nil
}

// Stop stops listening, waits for in-flight sends and delivery to end, and leaves what is unsent in the outbox.
func (e *Engine) Stop(ctx context.Context) error {
	if e.cancel == nil {
		return nil
	}
	e.cancel()
	err := e.stopHTTP()
	// Resumed joins append and fan out: done before the outbox stops.
	e.background.Wait()
	e.outbox.Stop()
	<-e.dispatchDone
	<-e.pruneDone
	e.cancel = nil
	return err
}

// Room returns what the engine knows about a room, or nil.
func (e *Engine) Room(ctx context.Context, roomID string) (*RoomInfo, error) {
	return e.store.GetRoom(ctx, roomID)
}

// CurrentState returns a room's current state entries.
func (e *Engine) CurrentState(ctx context.Context, roomID string) ([]StateEntry, error) {
	return e.store.CurrentState(ctx, roomID)
}

// GetEventByID returns a stored event (log or outlier), or nil.
func (e *Engine) GetEventByID(ctx context.Context, eventID string) (*StoredEvent, error) {
	return e.store.GetEvent(ctx, eventID)
}

// Events returns up to limit events of a room's log after index after, oldest first.
func (e *Engine) Events(ctx context.Context, roomID string, after int64, limit int) ([]*StoredEvent, error) {
	return e.store.EventsAfter(ctx, roomID, after, limit)
}
