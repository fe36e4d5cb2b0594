// Package appservice is lmbridge's side facing the homeserver: the application-service HTTP listener with a durable
// transaction inbox, per-room ordered delivery of the stored events, ping, user and alias queries, health endpoints,
// and intents for the bot and the ghosts. It builds on mautrix-go's appservice package for intents and the client,
// but not for intake: mautrix answers a transaction before handling it, while ours answers only once the transaction
// is committed to the database.
//
// Dedup works on two levels: a transaction is identified by its txn ID together with a digest of the event IDs it
// carries (a homeserver with a fresh database, such as Synapse numbering from 1 again, reuses txn IDs for other
// events), and every event is stored once by its event ID whatever transaction brought it. Ephemeral events (typing,
// receipts, presence: Synapse pushes them, Dendrite does not) count towards the digest but are not stored or
// delivered.
package appservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	mautrixappservice "maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"

	"github.com/lmbridge/lmbridge/appservice/upgrades"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/internal/httpguard"
)

// VersionTable is the version table of the appservice package's own tables.
const VersionTable = "appservice_version"

var (
	// ErrNoRegistration means New was called without a registration.
	ErrNoRegistration = errors.New("no registration")
	// ErrNotGhost means a user ID is outside the ghost namespace of the registration.
	ErrNotGhost = errors.New("user is not in the ghost namespace")
	// ErrAlreadyStarted means Start was called twice.
	ErrAlreadyStarted = errors.New("appservice already started")
)

// Params is what New needs.
type Params struct {
	Homeserver   config.Homeserver
	AppService   config.AppService
	Registration *mautrixappservice.Registration
	// DB is the shared database; the package keeps its tables under appservice_version and mautrix's state store
	// under mx_version.
	DB *dbutil.Database
}

// AppService is lmbridge's application service.
type AppService struct {
	// AS is mautrix's application service, used for its intents and clients. Its own HTTP router is not served.
	AS *mautrixappservice.AppService

	reg          *mautrixappservice.Registration
	cfg          config.AppService
	db           *dbutil.Database
	stateStore   *sqlstatestore.SQLStateStore
	inbox        *inbox
	sends        *sendLog
	dispatcher   *dispatcher
	maxBodyBytes int64
	// limits bounds the listener (see Limits); tests shorten them before Start.
	limits httpguard.Limits

	botUserID     id.UserID
	ghostTemplate *template.Template
	userRegexes   []*regexp.Regexp
	aliasRegexes  []*regexp.Regexp
	queryHandler  atomic.Pointer[QueryHandler]
	crypto        cryptoHook
	extensions    atomic.Pointer[ExtensionHandler]

	ctx    context.Context
	mux    *http.ServeMux
	server *http.Server
	// guard bounds server; tests read its count of requests in flight.
	guard    *httpguard.Guard
	listener net.Listener
	live     atomic.Bool
	ready    atomic.Bool
}

// New builds the application service. It does not touch the network or the database yet.
func New(p Params) (*AppService, error) {
	if p.Registration == nil {
		return nil, ErrNoRegistration
	}
	tmpl, err := template.New("username").Parse(p.AppService.UsernameTemplate)
	if err != nil {
		return nil, fmt.Errorf("failed to parse appservice.username_template: %w", err)
	}
	userRegexes, err := compileNamespaces(p.Registration.Namespaces.UserIDs)
	if err != nil {
		return nil, fmt.Errorf("failed to compile user namespaces: %w", err)
	}
	aliasRegexes, err := compileNamespaces(p.Registration.Namespaces.RoomAliases)
	if err != nil {
		return nil, fmt.Errorf("failed to compile alias namespaces: %w", err)
	}
	stateStore := sqlstatestore.NewSQLStateStore(p.DB, dbutil.NoopLogger, true)
	mas, err := mautrixappservice.CreateFull(mautrixappservice.CreateOpts{
		Registration:     p.Registration,
		HomeserverDomain: p.Homeserver.Domain,
		HomeserverURL:    p.Homeserver.Address,
		HostConfig:       mautrixappservice.HostConfig{Hostname: p.AppService.Hostname, Port: p.AppService.Port},
		StateStore:       stateStore,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to create mautrix appservice: %w", err)
	}
	maxBody := p.AppService.MaxBodyBytes
	if maxBody <= 0 {
		maxBody = 16 << 20
	}
	as := &AppService{
		AS:            mas,
		reg:           p.Registration,
		cfg:           p.AppService,
		db:            p.DB.Child(VersionTable, upgrades.Table, nil),
		stateStore:    stateStore,
		maxBodyBytes:  maxBody,
		limits:        Limits(maxBody),
		botUserID:     id.NewUserID(p.AppService.Bot.Username, p.Homeserver.Domain),
		ghostTemplate: tmpl,
		userRegexes:   userRegexes,
		aliasRegexes:  aliasRegexes,
		ctx:           context.Background(),
	}
	as.mux = as.newRouter()
	as.inbox = &inbox{db: as.db}
	as.sends = &sendLog{db: as.db}
	as.dispatcher = &dispatcher{as: as, workers: make(map[id.RoomID]chan struct{})}
	as.live.Store(true)
	return as, nil
}

func compileNamespaces(list mautrixappservice.NamespaceList) ([]*regexp.Regexp, error) {
	out := make([]*regexp.Regexp, 0, len(list))
	for _, ns := range list {
		re, err := regexp.Compile(ns.Regex)
		if err != nil {
			return nil, fmt.Errorf("failed to compile %q: %w", ns.Regex, err)
		}
		out = append(out, re)
	}
	return out, nil
}

// Upgrade brings the package's tables and mautrix's state store tables to the current schema.
func (as *AppService) Upgrade(ctx context.Context) error {
	if err := as.db.Upgrade(ctx); err != nil {
		return fmt.Errorf("failed to upgrade appservice tables: %w", err)
	}
	if err := as.stateStore.Upgrade(ctx); err != nil {
		return fmt.Errorf("failed to upgrade state store tables: %w", err)
	}
	return as.sends.prune(ctx)
}

// Router is the mux the listener serves, so that other packages (the bridge's provisioning API) can mount their
// routes beside the homeserver's before Start.
func (as *AppService) Router() *http.ServeMux {
	return as.mux
}

func (as *AppService) newRouter() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /_matrix/app/v1/transactions/{txnID}", as.putTransaction)
	mux.HandleFunc("GET /_matrix/app/v1/users/{userID}", as.getUser)
	mux.HandleFunc("GET /_matrix/app/v1/rooms/{roomAlias}", as.getRoomAlias)
	mux.HandleFunc("POST /_matrix/app/v1/ping", as.postPing)
	mux.HandleFunc("GET /_matrix/mau/live", as.getLive)
	mux.HandleFunc("GET /_matrix/mau/ready", as.getReady)
	// Legacy paths from before the v1 prefix, which the spec lets homeservers fall back to.
	mux.HandleFunc("PUT /transactions/{txnID}", as.putTransaction)
	mux.HandleFunc("GET /users/{userID}", as.getUser)
	mux.HandleFunc("GET /rooms/{roomAlias}", as.getRoomAlias)
	mux.HandleFunc("/_matrix/app/", as.unrecognized)
	return mux
}

// Start opens the listener and starts delivering stored events to handler, beginning with whatever an earlier run
// left unhandled. It returns once the listener is bound; serving stops when ctx is cancelled or Stop is called.
func (as *AppService) Start(ctx context.Context, handler EventHandler) error {
	if as.server != nil {
		return ErrAlreadyStarted
	}
	as.ctx = ctx
	as.AS.Log = *zerolog.Ctx(ctx)
	as.dispatcher.handler = handler
	as.dispatcher.lock.Lock()
	as.dispatcher.ctx = ctx
	as.dispatcher.lock.Unlock()

	rooms, err := as.inbox.pendingRooms(ctx)
	if err != nil {
		return fmt.Errorf("failed to read rooms with pending events: %w", err)
	}
	for _, roomID := range rooms {
		as.dispatcher.notify(roomID)
	}
	if len(rooms) > 0 {
		zerolog.Ctx(ctx).Info().Int("rooms", len(rooms)).Msg("Resuming events left unhandled by the last run")
	}

	addr := net.JoinHostPort(as.cfg.Hostname, strconv.Itoa(int(as.cfg.Port)))
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", addr, err)
	}
	as.listener = listener
	as.guard = httpguard.New(ctx, "appservice", as.limits)
	as.server = as.guard.Server(http.HandlerFunc(as.serveHTTP))
	as.server.BaseContext = func(net.Listener) context.Context { return ctx }
	go as.pruneLoop(ctx)
	go func() {
		zerolog.Ctx(ctx).Info().Str("address", listener.Addr().String()).Msg("Application service listener started")
		if err := as.server.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			zerolog.Ctx(ctx).Err(err).Msg("Application service listener failed")
		}
	}()
	return nil
}

// Bounds of the application-service listener (see Limits). Its good client is the homeserver, which sends one
// transaction at a time over a short path: a request that takes 30 s to arrive is not the homeserver's.
const (
	listenReadHeaderTimeout = 10 * time.Second
	listenReadTimeout       = 30 * time.Second
	listenWriteTimeout      = 2 * time.Minute
	listenIdleTimeout       = 90 * time.Second
	listenMaxHeaderBytes    = 64 << 10
	// listenMaxConns and listenMaxRequests bound the goroutines and buffers of connections, as on the federation
	// listener; there is no bound per address on connections, since the homeserver is usually the only address.
	listenMaxConns    = 8192
	listenMaxRequests = 4096
	// listenMaxRequestsPerIP bounds the requests of one address until their token is checked.
	listenMaxRequestsPerIP = 64
	// listenBodyBudget bounds the transaction bodies held at once, at least four of the largest.
	listenBodyBudget = 64 << 20
	listenRetryAfter = time.Second
)

// Limits are the application-service listener's bounds, for transactions of at most maxBodyBytes.
func Limits(maxBodyBytes int64) httpguard.Limits {
	return httpguard.Limits{
		ReadHeaderTimeout: listenReadHeaderTimeout,
		ReadTimeout:       listenReadTimeout,
		WriteTimeout:      listenWriteTimeout,
		IdleTimeout:       listenIdleTimeout,
		MaxHeaderBytes:    listenMaxHeaderBytes,
		MaxConns:          listenMaxConns,
		MaxRequests:       listenMaxRequests,
		MaxRequestsPerIP:  listenMaxRequestsPerIP,
		BodyBudget:        max(listenBodyBudget, 4*maxBodyBytes),
		RetryAfter:        listenRetryAfter,
	}
}

const (
	// inboxRetention is how long handled events stay in the inbox.
	inboxRetention = 24 * time.Hour
	pruneInterval  = time.Hour
)

func (as *AppService) pruneLoop(ctx context.Context) {
	ticker := time.NewTicker(pruneInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		removed, err := as.inbox.prune(ctx, time.Now().Add(-inboxRetention))
		if err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to prune the transaction inbox")
		} else if removed > 0 {
			zerolog.Ctx(ctx).Debug().Int64("events", removed).Msg("Pruned handled events from the transaction inbox")
		}
	}
}

// Addr is the bound listener address, useful when the configured port was 0.
func (as *AppService) Addr() net.Addr {
	if as.listener == nil {
		return nil
	}
	return as.listener.Addr()
}

// Stop closes the listener, waiting a little for requests in flight so that a transaction being committed is
// either answered or not acknowledged at all, then waits for the room workers (whose ctx the caller cancels).
func (as *AppService) Stop() {
	as.ready.Store(false)
	if as.server != nil {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = as.server.Shutdown(shutdownCtx)
	}
	as.dispatcher.wg.Wait()
}

// Enqueue stores events that reached lmbridge other than by a transaction (catch-up through /messages) in the inbox,
// skipping those already there, and hands them to the room workers. source is recorded in place of a txn ID.
func (as *AppService) Enqueue(ctx context.Context, source string, events []*event.Event) (int, error) {
	stored := make([]storedEvent, 0, len(events))
	for _, evt := range events {
		cp := *evt
		// Stored as the homeserver sent it, not as mautrix would re-encode the parsed content.
		cp.Content = event.Content{VeryRaw: evt.Content.VeryRaw}
		raw, err := json.Marshal(&cp)
		if err != nil {
			return 0, fmt.Errorf("failed to marshal event %s: %w", evt.ID, err)
		}
		stored = append(stored, storedEvent{eventID: evt.ID, roomID: evt.RoomID, raw: raw})
	}
	rooms, n, err := as.inbox.enqueue(ctx, source, stored)
	if err != nil {
		return 0, fmt.Errorf("failed to enqueue events: %w", err)
	}
	for _, roomID := range rooms {
		as.dispatcher.notify(roomID)
	}
	return n, nil
}

// BotUserID is the bridge bot's user ID.
func (as *AppService) BotUserID() id.UserID { return as.botUserID }

// HomeserverDomain is the homeserver's server name.
func (as *AppService) HomeserverDomain() string { return as.AS.HomeserverDomain }

// GhostUserID is the ghost for name (an encoded LM user ID, e.g. "bob=remote.example"), per the username template.
func (as *AppService) GhostUserID(name string) (id.UserID, error) {
	var sb strings.Builder
	if err := as.ghostTemplate.Execute(&sb, name); err != nil {
		return "", fmt.Errorf("failed to render username template: %w", err)
	}
	userID := id.NewUserID(sb.String(), as.AS.HomeserverDomain)
	if !as.IsGhost(userID) {
		return "", fmt.Errorf("%w: %s", ErrNotGhost, userID)
	}
	return userID, nil
}

// IsGhost reports whether userID is in the registration's user namespace and is not the bot.
func (as *AppService) IsGhost(userID id.UserID) bool {
	return userID != as.botUserID && as.inUserNamespace(userID)
}

func (as *AppService) inUserNamespace(userID id.UserID) bool {
	for _, re := range as.userRegexes {
		if re.MatchString(string(userID)) {
			return true
		}
	}
	return false
}

func (as *AppService) inAliasNamespace(alias id.RoomAlias) bool {
	for _, re := range as.aliasRegexes {
		if re.MatchString(string(alias)) {
			return true
		}
	}
	return false
}

// Client is the bot's plain client-server client.
func (as *AppService) Client() *mautrix.Client { return as.Bot().Client }
