package provider

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	"github.com/lmbridge/lmbridge/mimi/provider/upgrades"
	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/group"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// receivedKept is how long a follower remembers the notify messages it applied.
const receivedKept = 7 * 24 * time.Hour

// inboxBatch is how many events the callbacks get per read of mimi_inbox (its LIMIT).
const inboxBatch = 64

// Suite is the ciphersuite of the rooms this provider creates (the MLS mandatory-to-implement one).
const Suite ciphersuite.ID = 1

// Config configures a provider.
type Config struct {
	// Domain is the provider's domain: its users' and rooms' URIs, its TLS name, its From header.
	Domain string
	// Listen is the address the HTTPS server binds (127.0.0.1:0 in tests).
	Listen string
	// PublicURL is the base of the URLs the directory lists; empty means https://<Domain>:<listen port>.
	PublicURL string
	// TLS is the certificate and the peers' CA pool.
	TLS *TLSConfig
	// DB is the application's database; the provider keeps its tables under mimi_version.
	DB *dbutil.Database
	// Callbacks receive what remote users do in the provider's rooms; nil drops it.
	Callbacks Callbacks
	// Locate gives the base URL (https://host[:port]) of a peer's well-known directory; nil means https://<domain>.
	Locate func(domain string) string
	// Dial connects to a peer's host:port; nil dials it as is.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// RetryMin and RetryMax bound the hub's backoff between notify attempts to a follower (defaults 50 ms, 10 s).
	RetryMin, RetryMax time.Duration
	// KeyPackages is how many KeyPackages each local client keeps published (default 4).
	KeyPackages int
	// RequireConsent makes keyMaterial for a local user, asked for by another provider's user, answer noConsent
	// (or noConsentForThisRoom) unless the local user granted it (GrantConsent).
	RequireConsent bool
	// Findable says whether a local user may be found by identifierQuery (by exact handle or nick); nil lets every
	// user be.
	Findable func(ctx context.Context, user string) bool
	// CatchUp is how long an operation refused for a wrong epoch waits for the hub's notify before retrying
	// (default 10 s).
	CatchUp time.Duration
	// UnknownUser, when set, is asked about a local user that keyMaterial names and that has no client yet: it may
	// register one (RegisterUser) and return nil, and the claim is made again; an error answers "unknown user". It
	// lets an application such as a bridge make its users' clients on first use, when another provider adds them.
	UnknownUser func(ctx context.Context, user string) error
	// ExternalContent, when set, gives the object with an ID that ContentURL named, served to other providers (over
	// mutual TLS) for the external parts of messages; ErrUnknownContent answers 404.
	ExternalContent func(ctx context.Context, id string) ([]byte, error)
}

// Callbacks are how the application (the bridge) hears about a room. A callback that returns an error is called
// again later with the same event: events are kept until their callback succeeds.
type Callbacks interface {
	// OnMessage is MIMI content (mimi/content message bytes) a remote user sent.
	OnMessage(ctx context.Context, m Message) error
	// OnMembership is a change of the participant list, or a local user joining or leaving the MLS group.
	OnMembership(ctx context.Context, m Membership) error
}

// Message is received content.
type Message struct {
	Room, Sender string
	Content      []byte
	// HubTime is the hub's acceptance time, the room's order.
	HubTime time.Time
}

// MembershipKind says what changed.
type MembershipKind string

// Membership changes.
const (
	// MemberAdded: a user entered the participant list (Role says as what).
	MemberAdded MembershipKind = "added"
	// MemberRemoved: a user left or was removed from the participant list.
	MemberRemoved MembershipKind = "removed"
	// MemberRole: a user's role changed.
	MemberRole MembershipKind = "role"
	// LocalJoined: a local user's client joined the room's MLS group (from a Welcome or an external commit); for a
	// room another provider hubs, the first one is how the application learns of the room.
	LocalJoined MembershipKind = "local_joined"
	// LocalLeft: a local user's last client left the group.
	LocalLeft MembershipKind = "local_left"
)

// Membership is a membership change.
type Membership struct {
	Room, User string
	Kind       MembershipKind
	Role       uint32
	HubTime    time.Time
}

// Provider is one MIMI provider: hub of the rooms it creates, follower of the others its users are in.
type Provider struct {
	cfg    Config
	domain string
	db     *dbutil.Database
	suite  *ciphersuite.Suite
	peers  *peers
	// sigPriv, sigPub are the provider's own key (external sender, groupInfo responses).
	sigPriv, sigPub []byte

	server   *http.Server
	listener net.Listener
	baseURL  string

	// roomLocks serialise what the follower side does in a room (commits, notify, sending), and hold its cache.
	roomLocks sync.Map // room URI → *localRoom
	hub       *hub
	fanout    *fanout
	inboxKick chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// afterAccept, in tests, fails what follows a remote hub's acceptance (a crash before the local store).
	afterAccept func() error
	// resyncing marks the clients being re-joined.
	resyncing sync.Map
}

// New opens a provider: it upgrades its tables and loads (or makes) its signing key. Start serves it.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if cfg.Domain == "" || cfg.DB == nil || cfg.TLS == nil {
		return nil, errors.New("mimi provider: domain, database and TLS are required")
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 50 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 10 * time.Second
	}
	if cfg.KeyPackages <= 0 {
		cfg.KeyPackages = 4
	}
	if cfg.CatchUp <= 0 {
		cfg.CatchUp = 10 * time.Second
	}
	suite, err := ciphersuite.Lookup(Suite)
	if err != nil {
		return nil, err
	}
	db := cfg.DB.Child("mimi_version", upgrades.Table, dbutil.ZeroLogger(*zerolog.Ctx(ctx)))
	if err := db.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("upgrading MIMI provider tables: %w", err)
	}
	p := &Provider{cfg: cfg, domain: cfg.Domain, db: db, suite: suite, inboxKick: make(chan struct{}, 1)}
	if err := p.loadKey(ctx); err != nil {
		return nil, err
	}
	p.peers = newPeers(cfg.Domain, cfg.TLS, cfg.Locate, cfg.Dial)
	p.hub = newHub(p)
	p.fanout = newFanout(p)
	return p, nil
}

func (p *Provider) loadKey(ctx context.Context) error {
	err := p.db.QueryRow(ctx, getProviderKeyQuery, "hub").Scan(&p.sigPriv, &p.sigPub)
	if errors.Is(err, sql.ErrNoRows) {
		priv, pub, err := p.suite.GenerateSignatureKeyPair()
		if err != nil {
			return fmt.Errorf("making provider key: %w", err)
		}
		if _, err := p.db.Exec(ctx, insertProviderKeyQuery, "hub", priv, pub); err != nil {
			return fmt.Errorf("storing provider key: %w", err)
		}
		return p.loadKey(ctx)
	}
	if err != nil {
		return fmt.Errorf("loading provider key: %w", err)
	}
	return nil
}

// Domain is the provider's domain.
func (p *Provider) Domain() string { return p.domain }

// Addr is the address the server listens on, once started.
func (p *Provider) Addr() string { return p.listener.Addr().String() }

// Start serves the endpoints and starts the fan-out and callback workers. They stop with Close (or ctx).
func (p *Provider) Start(ctx context.Context) error {
	l, err := net.Listen("tcp", p.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening for MIMI: %w", err)
	}
	if _, err := p.db.Exec(ctx, pruneReceivedQuery, time.Now().Add(-receivedKept).UnixMilli()); err != nil {
		_ = l.Close()
		return fmt.Errorf("pruning notify digests: %w", err)
	}
	p.listener = l
	p.baseURL = p.cfg.PublicURL
	if p.baseURL == "" {
		_, port, _ := net.SplitHostPort(l.Addr().String())
		p.baseURL = "https://" + p.domain + ":" + port
	}
	p.ctx, p.cancel = context.WithCancel(ctx)
	p.server = &http.Server{
		Handler:           p.handler(),
		TLSConfig:         p.cfg.TLS.server(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return p.ctx },
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := p.server.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			zerolog.Ctx(ctx).Err(err).Msg("MIMI server stopped")
		}
	}()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.inboxLoop(p.ctx)
	}()
	return p.fanout.start(p.ctx)
}

// Close stops the server and the workers. What was acknowledged is in the database; the next Start resumes it.
func (p *Provider) Close() error {
	if p.cancel == nil {
		return nil
	}
	p.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := p.server.Shutdown(ctx)
	// The fan-out workers first: the in-process one may start commits, which the wait below then covers.
	p.fanout.wait()
	p.wg.Wait()
	return err
}

func (p *Provider) groupConfig() group.Config {
	return group.Config{Auth: credentialAuth{}, PastEpochs: 2}
}

// capabilities is what local clients advertise: the defaults plus the app_data_dictionary extension.
func (p *Provider) capabilities() *wire.Capabilities {
	return &wire.Capabilities{
		Versions:     []wire.ProtocolVersion{wire.MLS10},
		CipherSuites: []ciphersuite.ID{p.suite.ID()},
		Extensions:   []wire.ExtensionType{ExtensionAppDataDictionary},
		Credentials:  []wire.CredentialType{wire.CredentialBasic},
	}
}

// RegisterUser makes a local client (device) for a user of this provider and publishes its KeyPackages. It
// returns the client's URI.
func (p *Provider) RegisterUser(ctx context.Context, name, device string) (string, error) {
	user, client := UserURI(p.domain, name), ClientURI(p.domain, name, device)
	if _, err := UserOfClient(client); err != nil || strings.ContainsAny(name+device, "/") {
		return "", fmt.Errorf("registering %s: %w", client, ErrBadURI)
	}
	priv, pub, err := p.suite.GenerateSignatureKeyPair()
	if err != nil {
		return "", fmt.Errorf("registering %s: %w", client, err)
	}
	err = p.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if _, err := p.db.Exec(ctx, insertClientQuery, client, user, priv, pub); err != nil {
			return err
		}
		return p.refillKeyPackages(ctx, client)
	})
	if err != nil {
		return "", fmt.Errorf("registering %s: %w", client, err)
	}
	return client, nil
}

func (p *Provider) identity(ctx context.Context, client string) (*group.Identity, string, error) {
	var user string
	id := &group.Identity{Credential: wire.BasicCredential([]byte(client)), Capabilities: p.capabilities()}
	err := p.db.QueryRow(ctx, getClientQuery, client).Scan(&user, &id.SigPriv, &id.SigPub)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", fmt.Errorf("%w: %s", ErrUnknownUser, client)
	}
	if err != nil {
		return nil, "", fmt.Errorf("loading client %s: %w", client, err)
	}
	return id, user, nil
}

// Clients lists the local clients of a user (a user URI of this provider), none when it has not been registered.
func (p *Provider) Clients(ctx context.Context, user string) ([]string, error) {
	return p.clientsOf(ctx, user)
}

func (p *Provider) clientsOf(ctx context.Context, user string) ([]string, error) {
	rows, err := p.db.Query(ctx, clientsOfUserQuery, user)
	if err != nil {
		return nil, fmt.Errorf("listing clients of %s: %w", user, err)
	}
	return scanStrings(rows)
}

// refillKeyPackages tops a client's unclaimed KeyPackages up to the configured number.
func (p *Provider) refillKeyPackages(ctx context.Context, client string) error {
	id, _, err := p.identity(ctx, client)
	if err != nil {
		return err
	}
	var n int
	if err := p.db.QueryRow(ctx, countKeyPkgQuery, client).Scan(&n); err != nil {
		return fmt.Errorf("counting key packages of %s: %w", client, err)
	}
	for ; n < p.cfg.KeyPackages; n++ {
		kp, priv, err := group.NewKeyPackage(p.suite, id)
		if err != nil {
			return fmt.Errorf("making key package for %s: %w", client, err)
		}
		var w codec.Writer
		w.Opaque(priv.InitPriv)
		w.Opaque(priv.EncryptionPriv)
		if _, err := p.db.Exec(ctx, insertKeyPkgQuery, kp.Ref(p.suite), client, codec.Marshal(kp), w.Bytes()); err != nil {
			return fmt.Errorf("storing key package for %s: %w", client, err)
		}
	}
	return nil
}

// keyPackage reads a stored KeyPackage and its private keys by reference.
func (p *Provider) keyPackage(ctx context.Context, ref []byte) (string, *wire.KeyPackage, *group.KeyPackagePrivate, error) {
	var client string
	var kpb, privb []byte
	if err := p.db.QueryRow(ctx, getKeyPkgQuery, ref).Scan(&client, &kpb, &privb); err != nil {
		return "", nil, nil, err
	}
	kp := new(wire.KeyPackage)
	if err := codec.Unmarshal(kpb, kp); err != nil {
		return "", nil, nil, fmt.Errorf("decoding stored key package: %w", err)
	}
	r := codec.NewReader(privb)
	priv := &group.KeyPackagePrivate{InitPriv: r.Opaque(), EncryptionPriv: r.Opaque()}
	if err := r.Finish(); err != nil {
		return "", nil, nil, fmt.Errorf("decoding stored key package keys: %w", err)
	}
	id, _, err := p.identity(ctx, client)
	if err != nil {
		return "", nil, nil, err
	}
	priv.SigPriv = id.SigPriv
	return client, kp, priv, nil
}

func (p *Provider) kickInbox() {
	select {
	case p.inboxKick <- struct{}{}:
	default:
	}
}

// inboxLoop hands stored events to the callbacks, in order, deleting each once its callback returned nil.
func (p *Provider) inboxLoop(ctx context.Context) {
	log := zerolog.Ctx(ctx)
	backoff := p.cfg.RetryMin
	for {
		failed := false
		if err := p.drainInbox(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn().Err(err).Msg("MIMI callback failed, retrying")
			failed = true
		}
		wait := time.Minute
		if failed {
			wait, backoff = backoff, min(backoff*2, p.cfg.RetryMax)
		} else {
			backoff = p.cfg.RetryMin
		}
		select {
		case <-ctx.Done():
			return
		case <-p.inboxKick:
		case <-time.After(wait):
		}
	}
}

func (p *Provider) drainInbox(ctx context.Context) error {
	for {
		rows, err := p.db.Query(ctx, inboxHeadQuery, inboxBatch)
		if err != nil {
			return err
		}
		type ev struct {
			seq              int64
			room, kind, user string
			payload          []byte
			hubTime          int64
		}
		var evs []ev
		for rows.Next() {
			var e ev
			if err := rows.Scan(&e.seq, &e.room, &e.kind, &e.user, &e.payload, &e.hubTime); err != nil {
				rows.Close()
				return err
			}
			evs = append(evs, e)
		}
		rows.Close()
		if len(evs) == 0 {
			return rows.Err()
		}
		done := int64(-1)
		var cbErr error
		for _, e := range evs {
			if cb := p.cfg.Callbacks; cb != nil {
				t := time.UnixMilli(e.hubTime)
				if isConsentKind(e.kind) {
					if ccb, ok := cb.(ConsentCallbacks); ok {
						if c, ok := consentEvent(e.kind, e.room, e.user, e.payload, t); ok {
							cbErr = ccb.OnConsent(ctx, c)
						}
					}
				} else if e.kind == "message" {
					cbErr = cb.OnMessage(ctx, Message{Room: e.room, Sender: e.user, Content: e.payload, HubTime: t})
				} else {
					var role uint32
					if len(e.payload) == 4 {
						role = uint32(e.payload[0])<<24 | uint32(e.payload[1])<<16 | uint32(e.payload[2])<<8 | uint32(e.payload[3])
					}
					cbErr = cb.OnMembership(ctx, Membership{Room: e.room, User: e.user, Kind: MembershipKind(e.kind), Role: role, HubTime: t})
				}
				if cbErr != nil {
					cbErr = fmt.Errorf("callback for %s event %d: %w", e.kind, e.seq, cbErr)
					break
				}
			}
			done = e.seq
		}
		// One delete for the events handled: they are handled in seq order.
		if done >= 0 {
			if _, err := p.db.Exec(ctx, deleteInboxQuery, done); err != nil {
				return err
			}
		}
		if cbErr != nil {
			return cbErr
		}
		// A short batch was all there was: what is stored after it kicks the loop.
		if len(evs) < inboxBatch {
			return nil
		}
	}
}

// queueEvent stores an event for the callbacks (in the caller's transaction).
func (p *Provider) queueEvent(ctx context.Context, room string, kind MembershipKind, user string, payload []byte, hubTime uint64) error {
	if payload == nil {
		payload = []byte{}
	}
	if _, err := p.db.Exec(ctx, insertInboxQuery, room, string(kind), user, payload, int64(hubTime)); err != nil {
		return fmt.Errorf("queueing %s event: %w", kind, err)
	}
	return nil
}

func roleBytes(r uint32) []byte { return []byte{byte(r >> 24), byte(r >> 16), byte(r >> 8), byte(r)} }

func nowMillis() uint64 { return uint64(time.Now().UnixMilli()) }
