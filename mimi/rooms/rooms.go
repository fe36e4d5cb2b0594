// Package rooms is the bridge's MIMI side: remote.Rooms and the delivery to a remote.Listener on top of a
// mimi/provider Provider, so that the bridge sees MIMI rooms as it sees Linearized Matrix rooms.
//
// Identifiers cross the seam in Matrix form, which the bridge's user mapping understands: the MIMI user
// mimi://<domain>/u/<name> is @<name>:<domain>, the room mimi://<hub>/r/<name> is !<name>:<hub>, and a MIMI message is
// the event $<hex of its message ID>. The bridge's Matrix users are this provider's users (their names are the
// bridge's encoded Matrix IDs); each gets an MLS client on first use (RegisterUser), whose state the provider keeps in
// the database.
//
// Sends: Matrix content becomes MIMI content (mimi/matrixcontent) and goes to the room's hub; a keyed send keeps its
// encoded content before it leaves, so that a retry sends the same bytes, whose message ID the receivers deduplicate
// on, and the send's ID is final once the hub accepted it (remote.FinalSends). Receipt: the provider's persisted inbox
// calls OnMessage and OnMembership until they return nil; they hand the bridge Matrix events (at least once, in the
// hub's order), membership as m.room.member events, and a local user's first join from another provider's Welcome
// as an invite.
//
// Attachments (media.go): a Matrix file is downloaded from the homeserver, sealed as draft-ietf-mimi-content's
// external content (AES-128-GCM, SHA-256 content hash), kept in mimi_rooms_media_out and served by the provider to
// other providers over mutual TLS; another provider's external part is fetched over the same mutual TLS, verified,
// decrypted and uploaded to the homeserver as the sender's ghost, once per URL and hash. A file that cannot cross
// becomes a notice in the Matrix room (Matrix → MIMI: the bridge tells the Matrix sender).
//
// Not carried: state events other than membership (room name and topic stay on their side), knocks, and who removed
// a user when another provider did it (the removal is shown as done by another member of the room).
package rooms

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	"github.com/lmbridge/lmbridge/mimi/provider"
	"github.com/lmbridge/lmbridge/mimi/rooms/upgrades"
	"github.com/lmbridge/lmbridge/remote"
)

// device is the name of the one client the bridge holds for each of its users.
const device = "lmbridge"

var (
	// ErrBadID means a seam identifier that does not name a MIMI user or room.
	ErrBadID = errors.New("not a MIMI identifier in Matrix form")
	// ErrNoListener means an event arrived before SetListener; it stays in the provider's inbox.
	ErrNoListener = errors.New("no listener for MIMI events yet")
)

var (
	_ remote.Rooms       = (*Rooms)(nil)
	_ remote.FinalSends  = (*Rooms)(nil)
	_ provider.Callbacks = (*callbacks)(nil)
)

// Config configures the MIMI side.
type Config struct {
	// Provider is the provider's configuration; Callbacks and UnknownUser are set by New.
	Provider provider.Config
	// IsLocalUser says whether a user of this provider (in Matrix form, @name:domain) stands for a Matrix user the
	// bridge serves, so that another provider adding them registers their client on first use.
	IsLocalUser func(remote.UserID) bool
	// Media carries attachments: Matrix files become sealed external parts this provider serves, and other
	// providers' external parts are fetched and uploaded to the homeserver. Nil refuses attachments.
	Media Media
}

// Rooms is remote.Rooms over a MIMI provider.
type Rooms struct {
	p       *provider.Provider
	db      *dbutil.Database
	domain  string
	isLocal func(remote.UserID) bool
	media   Media

	lock     sync.RWMutex
	listener remote.Listener
}

type callbacks struct{ r *Rooms }

// New opens the provider (its tables and this package's) without serving it yet.
func New(ctx context.Context, cfg Config) (*Rooms, error) {
	if cfg.Provider.DB == nil {
		return nil, errors.New("mimi rooms: the provider needs a database")
	}
	r := &Rooms{domain: cfg.Provider.Domain, isLocal: cfg.IsLocalUser, media: cfg.Media}
	r.db = cfg.Provider.DB.Child("mimi_rooms_version", upgrades.Table, dbutil.ZeroLogger(*zerolog.Ctx(ctx)))
	if err := r.db.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("upgrading MIMI bridge tables: %w", err)
	}
	pc := cfg.Provider
	pc.Callbacks = &callbacks{r: r}
	pc.UnknownUser = r.unknownUser
	pc.ExternalContent = r.externalContent
	p, err := provider.New(ctx, pc)
	if err != nil {
		return nil, err
	}
	r.p = p
	return r, nil
}

// SetListener sets who receives the rooms' events; call it before Start.
func (r *Rooms) SetListener(l remote.Listener) {
	r.lock.Lock()
	r.listener = l
	r.lock.Unlock()
}

func (r *Rooms) getListener() (remote.Listener, error) {
	r.lock.RLock()
	defer r.lock.RUnlock()
	if r.listener == nil {
		return nil, ErrNoListener
	}
	return r.listener, nil
}

// Start serves the provider's endpoints and starts delivering events.
func (r *Rooms) Start(ctx context.Context) error { return r.p.Start(ctx) }

// Close stops the provider.
func (r *Rooms) Close() error { return r.p.Close() }

// Provider is the provider underneath, for status and tests.
func (r *Rooms) Provider() *provider.Provider { return r.p }

// Server is the provider's domain.
func (r *Rooms) Server() remote.ServerName { return remote.ServerName(r.domain) }

// SendIDsAreFinal says that a send's ID is the message's (remote.FinalSends): Send returns once the hub accepted it.
func (r *Rooms) SendIDsAreFinal() bool { return true }

// UserURI is the MIMI URI of a user in Matrix form (@name:domain).
func UserURI(u remote.UserID) (string, error) {
	name, domain, ok := strings.Cut(strings.TrimPrefix(string(u), "@"), ":")
	if !strings.HasPrefix(string(u), "@") || !ok || name == "" || domain == "" || strings.ContainsAny(string(u), "/ ") {
		return "", fmt.Errorf("%w: user %q", ErrBadID, u)
	}
	return provider.UserURI(domain, name), nil
}

// SeamUser is the Matrix form of a MIMI user URI.
func SeamUser(uri string) (remote.UserID, error) {
	domain, err := provider.ParseUser(uri)
	if err != nil {
		return "", err
	}
	name := strings.TrimPrefix(uri, provider.UserURI(domain, ""))
	if strings.Contains(name, ":") || strings.Contains(domain, "@") {
		return "", fmt.Errorf("%w: %q has no Matrix form", ErrBadID, uri)
	}
	return remote.UserID("@" + name + ":" + domain), nil
}

// RoomURI is the MIMI URI of a room in Matrix form (!name:hub).
func RoomURI(room remote.RoomID) (string, error) {
	name, hub, ok := strings.Cut(strings.TrimPrefix(string(room), "!"), ":")
	if !strings.HasPrefix(string(room), "!") || !ok || name == "" || hub == "" || strings.ContainsAny(string(room), "/ ") {
		return "", fmt.Errorf("%w: room %q", ErrBadID, room)
	}
	return provider.RoomURI(hub, name), nil
}

// SeamRoom is the Matrix form of a MIMI room URI.
func SeamRoom(uri string) (remote.RoomID, error) {
	hub, err := provider.ParseRoom(uri)
	if err != nil {
		return "", err
	}
	name := strings.TrimPrefix(uri, provider.RoomURI(hub, ""))
	if strings.Contains(name, ":") {
		return "", fmt.Errorf("%w: %q has no Matrix form", ErrBadID, uri)
	}
	return remote.RoomID("!" + name + ":" + hub), nil
}

// isOurs says whether a MIMI user URI is one of this provider's.
func (r *Rooms) isOurs(uri string) bool {
	d, err := provider.DomainOf(uri)
	return err == nil && d == r.domain
}

// ensureClient registers a local user's client unless it has one.
func (r *Rooms) ensureClient(ctx context.Context, user string) error {
	if !r.isOurs(user) {
		return &remote.Mapped{Err: fmt.Errorf("%s is not a user of %s", user, r.domain), Also: []error{remote.ErrNotOurUser}}
	}
	clients, err := r.p.Clients(ctx, user)
	if err != nil || len(clients) > 0 {
		return err
	}
	name := strings.TrimPrefix(user, provider.UserURI(r.domain, ""))
	if _, err = r.p.RegisterUser(ctx, name, device); err != nil {
		// Two first uses at once: the other one registered it.
		if clients, cerr := r.p.Clients(ctx, user); cerr == nil && len(clients) > 0 {
			return nil
		}
		return fmt.Errorf("registering a MIMI client for %s: %w", user, err)
	}
	zerolog.Ctx(ctx).Info().Str("mimi_user", user).Msg("Registered a MIMI client")
	return nil
}

// unknownUser registers a client for a user another provider asks key material for, if the bridge serves them.
func (r *Rooms) unknownUser(ctx context.Context, user string) error {
	seam, err := SeamUser(user)
	if err != nil {
		return err
	}
	if r.isLocal == nil || !r.isLocal(seam) {
		return fmt.Errorf("%w: %s", provider.ErrUnknownUser, user)
	}
	return r.ensureClient(ctx, user)
}

// mapErr adds the seam's sentinels to a provider error.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	var also []error
	switch {
	case errors.Is(err, provider.ErrNotAllowed):
		also = append(also, remote.ErrForbidden)
	case errors.Is(err, provider.ErrUnknownRoom):
		also = append(also, remote.ErrNotFound)
	case errors.Is(err, provider.ErrNotInRoom):
		also = append(also, remote.ErrNotJoined)
	case errors.Is(err, provider.ErrUnknownUser), errors.Is(err, provider.ErrNoKeyMaterial):
		also = append(also, remote.ErrNotFound)
	case errors.Is(err, provider.ErrBadURI), errors.Is(err, ErrBadID):
		also = append(also, remote.ErrUnsupported)
	case errors.Is(err, provider.ErrPeerAuth):
		also = append(also, remote.ErrBadAnswer)
	}
	if len(also) == 0 {
		return err
	}
	return &remote.Mapped{Err: err, Also: also}
}

func newRoomName() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}
